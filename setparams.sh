# Source me: `. ./setparams.sh` (or `source setparams.sh`) before `python -m tuner.service`.
# Sets the tuner's and the collector's addresses, keeping any value already set in the shell.
# The defaults do not collide: the tuner listens on 8081, the collector on 8080.
# Other settings (TUNER_PERIOD, TUNER_STATE, TUNER_CONFIG, ...) have defaults in the service itself.
export TUNER_HOST="${TUNER_HOST:-127.0.0.1}"
export TUNER_PORT="${TUNER_PORT:-8081}"
export COLLECTOR_HOST="${COLLECTOR_HOST:-127.0.0.1}"
export COLLECTOR_PORT="${COLLECTOR_PORT:-8080}"
