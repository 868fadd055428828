"""ClientApp: trains on its shard, keeps its held copy, serves its requests (FIFO queue)."""

from flower_app.task import from_config, task
from jointopt.flower import client_app

app = client_app(lambda context: task(*from_config(context.run_config)))
