"""What the torch-free launcher (launch/) and the trainer share. Imports nothing heavy: no torch, no transformers."""
from __future__ import annotations

import signal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The demo's config: the base without --config for the demo (bundled data, demo model); a run on other data or
# another model starts from the library's defaults instead (ft.cli.default_config).
DEFAULT_CONFIG = REPO / "configs" / "demo.yaml"

# Exit code after a stop signal was handled (checkpoint written when training had started): EX_TEMPFAIL, "requeue me".
EXIT_PREEMPTED = 75
# Exit code after Ctrl-C stopped a command at once (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130
# Exit code of a usage, config or data error (argparse's convention), before any work is done.
EXIT_USAGE = 2

# Signals that ask a run to finish its step, checkpoint and exit EXIT_PREEMPTED: Slurm's preemption / time-limit
# warning (USR1/USR2, configurable), SIGTERM (preemption, scancel) and SIGINT (Ctrl-C; a second one stops at once).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
