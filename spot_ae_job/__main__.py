"""`python -m spot_ae_job` (and spark-submit of this file) = the `spot-ae` command line."""
from spot_ae_job.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
