"""ServerApp: jointopt's strategy decides who trains, who downloads and how fast each
client serves, every round."""

from __future__ import annotations

import logging

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from flower_app.task import from_config, problem, task
from jointopt.flower import JointStrategy, flatten, model_arrays

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    scenario = problem(*from_config(cfg))
    digits = task(*from_config(cfg)).harness          # the server's copy measures K
    model = digits.build_model(int(cfg["seed"]))

    def global_error(arrays) -> float:
        """K: the global model's training loss (the convergence-error proxy)."""
        return digits.measure(model, torch.from_numpy(flatten(arrays)))[0]

    strategy = JointStrategy(scenario, str(cfg["policy"]), global_error=global_error,
                             seed=int(cfg["seed"]), queues=str(cfg["queues"]))
    strategy.start(grid, model_arrays(model, model.flat()),
                   num_rounds=int(cfg["num-server-rounds"]))
    table = strategy.rounds_frame()
    cols = ["round", "K", "participants", "downloads", "mean_aom", "timely_accuracy",
            "measured_use", "backlog"]
    log(logging.INFO, "jointopt per-round records:\n%s", table[cols].to_string(index=False))
    log(logging.INFO, "average timely accuracy %.4f, mean age of model %.2f rounds",
        table["correct"].sum() / max(table["requests"].sum(), 1), table["mean_aom"].mean())
    if cfg["out"]:
        table.to_csv(str(cfg["out"]), index=False)
