"""Starting training: `launch.local` (`sqlft train`, this machine) and `launch.submit` (`sqlft submit`, Slurm), built
from `launch.plan` (pure planning), `launch.slurm` (Slurm queries and checks) and `launch.supervisor` (the side that
runs next to the training processes). None of it imports torch."""
