"""``jointopt.flower``: the Flower integration, an alias of :mod:`jointopt.harness.flower`.

The implementation lives in the harness package, where the project keeps everything that
needs PyTorch; this module makes ``import jointopt.flower`` (and ``from jointopt.flower
import JointStrategy``) the same module object, private names included. Needs the ``flower``
and ``train`` extras.
"""

import sys

from jointopt.harness import flower as _flower

sys.modules[__name__] = _flower
