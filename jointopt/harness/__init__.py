"""Validation harness: real federated training (PyTorch, imported only when called).

Provenance: **project choice** (``docs/kinds/joint_training_inference.md``). Nothing is
imported here, so ``import jointopt.harness`` stays torch-free; import the modules:

* :mod:`jointopt.harness.data`: digits loading, Dirichlet and shard partitioners,
  per-client request sampling (numpy, scikit-learn);
* :mod:`jointopt.harness.nets`: :class:`~jointopt.harness.nets.BlockNet` with exits and
  split points, :func:`~jointopt.harness.nets.mlp`, :func:`~jointopt.harness.nets.digits_cnn`;
* :mod:`jointopt.harness.fl`: :class:`~jointopt.harness.fl.FederatedHarness` (FedAvg with
  Bernoulli participation, unbiased aggregation, stale copies, M/M/1 serving), and the
  reusable :class:`~jointopt.harness.fl.FlatModel`, ``local_sgd``, ``aggregate_unbiased``,
  ``evaluate``;
* :mod:`jointopt.harness.calibrate`: least-squares fits of the convergence constants and
  the accuracy map from pilot runs;
* :mod:`jointopt.harness.validate`: surrogate against real training, per policy
  (``jointopt validate``);
* :mod:`jointopt.harness.early_exit`, :mod:`~jointopt.harness.cis_serving`,
  :mod:`~jointopt.harness.cis_surrogate`, :mod:`~jointopt.harness.cis_grid`: federated
  training of an early-exit network over a node tree, confidence-ordered serving, the
  torch-free surrogate and the rule-comparison grid (``docs/kinds/cis_early_exit.md``);
* :mod:`jointopt.harness.splitgp`: SplitGP training and its baselines with selective
  offloading (``docs/kinds/split_learning.md``).
"""
