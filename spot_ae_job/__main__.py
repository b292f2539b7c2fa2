"""`python -m spot_ae_job` (and spark-submit of this file) = the `spot-ae` command line."""
from spot_ae_job.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
