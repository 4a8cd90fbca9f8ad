# Sourced by the CLI run tests (cli_runs.sh, cli_pipeline.sh) after their usage line: a fresh work
# folder, `fail`, and the tiny space file they run on.
set -u
B=$1 W=$2
rm -rf "$W" && mkdir -p "$W" && cd "$W" || exit 1
fail() { echo "FAIL: $*"; exit 1; }

cat > tiny.json <<'JSON'
{"name": "tiny", "input_size": 16, "num_classes": 10,
 "stem": {"channels": 8, "kernel": 3, "stride": 1},
 "blocks": [{"type": "fixed", "expansion": 1, "kernel": 3, "channels": 8, "stride": 1},
            {"type": "searchable", "channels": 8, "repeats": 2, "stride": 1},
            {"type": "searchable", "channels": 16, "repeats": 2, "stride": 2}],
 "head": {"channels": 32}}
JSON
