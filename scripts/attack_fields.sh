#!/usr/bin/env bash
# Any JSON value in any field of the charger's 14 actions, lenient and strict, at full size:
# the suite's property test (tests/test_charger_actions.py) draws 100 cases, this draws
# EXAMPLES (default 2,000; about 30 s on a 2-core machine).  Every reply must be a conf valid by
# the official schema or a spec CALLERROR, never an InternalError.
#
#   bash scripts/attack_fields.sh [EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
PROPERTY_EXAMPLES=${1:-2000} exec "${PYTHON:-python}" -m pytest -n 0 -p no:cacheprovider \
    tests/test_charger_actions.py -k test_any_json_value_in_any_field
