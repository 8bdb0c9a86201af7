# Helpers shared by the scripts that start the gateway and the emulator as processes.
# Source it: `source scripts/lib.sh`.

# serving_line FILE: waits (at most 30 s) for the JSON line a process prints on stdout once
# it serves, and prints it.
serving_line() {
    for _ in $(seq 1 300); do
        if [[ -s $1 ]]; then head -n1 "$1"; return 0; fi
        sleep 0.1
    done
    echo "$(basename "$0"): no serving line in $1" >&2
    return 1
}

# field JSON NAME: one field of a JSON object.
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
