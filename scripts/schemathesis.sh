#!/usr/bin/env bash
# Fuzzes a running Bellows server against its own OpenAPI document
# (crates/api/openapi.json, served at /api/v1/openapi.json) with schemathesis:
# no 5xx, only documented status codes and content types, and every response
# body valid against its schema.
#
#   BELLOWS_TOKEN admin token sent with every request
#   BELLOWS_URL   server to test (default https://127.0.0.1:42113); only this
#                 server is contacted
#   BELLOWS_CA    CA certificate (PEM) to verify an https:// server with
#   BELLOWS_VENV  virtualenv holding schemathesis (default /tmp/bellows-venv);
#                 created and filled on first use
#   ST_MAX_EXAMPLES  test cases per operation and phase (default 30)
#   ST_SEED       optional seed, to replay a run
#
# Extra arguments are passed to `st run` (e.g. --report junit). schemathesis
# and Hypothesis keep caches in the current directory, so the run happens in
# $BELLOWS_VENV/run (relative paths in extra arguments resolve there); to
# replay a failure: cd "$BELLOWS_VENV/run" && "$BELLOWS_VENV/bin/st" replay ID.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
url="${BELLOWS_URL:-https://127.0.0.1:42113}"
url="${url%/}"
venv="${BELLOWS_VENV:-/tmp/bellows-venv}"
max_examples="${ST_MAX_EXAMPLES:-30}"

st="$venv/bin/st"
if ! [ -x "$st" ] || [ "$("$st" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  echo "schemathesis.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
fi

args=(
  run "$url/api/v1/openapi.json"
  --url "$url"
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
  --max-examples "$max_examples"
  --workers 1
  --request-timeout 10
  --max-redirects 0
  --generation-database none
  --wait-for-schema 30
  --no-color
  # Setting a BMC would let generated data point the server's power calls
  # at arbitrary addresses; tests only talk to loopback and their own
  # namespaces, so BMC records are set only by the BMC tests.
  --exclude-operation-id putBmc
  # Revoking could end the run's own token half-way.
  --exclude-operation-id revokeToken
  # An endless event stream: it never ends within a request timeout
  # (integration observability:: reads it instead).
  --exclude-operation-id followChanges
)
# Authenticated: every operation but /healthz and the document needs a
# token (BELLOWS_TOKEN, e.g. the data directory's admin.token).
if [ -n "${BELLOWS_TOKEN:-}" ]; then
  args+=(--header "Authorization: Bearer $BELLOWS_TOKEN")
fi
if [ -n "${BELLOWS_CA:-}" ]; then
  args+=(--tls-verify "$(realpath "$BELLOWS_CA")")
fi
if [ -n "${ST_SEED:-}" ]; then
  args+=(--seed "$ST_SEED")
fi

# Keep .schemathesis/ and .hypothesis/ out of the caller's work tree.
mkdir -p "$venv/run"
cd "$venv/run"

# Hard bound on the whole run, whatever the number of operations.
exec timeout 600 "$st" "${args[@]}" "$@"
