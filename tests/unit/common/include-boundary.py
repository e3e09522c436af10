#!/usr/bin/env python3
# A part sees only the headers of what it links (tether_part_headers() in
# CMakeLists.txt, docs/ARCHITECTURE.md): compiles a probe with the exact
# flags of one source of each part and checks that the headers of a part it
# may use are found and the headers of one it may not are missing.
import json
import os
import shlex
import subprocess
import sys
import tempfile

build = sys.argv[1]
with open(os.path.join(build, "compile_commands.json")) as f:
    commands = json.load(f)

# part: (a source of that part, headers it may include, headers it may not)
CASES = {
    "common": ("common/strutil.c", ["common/cleanup.h"],
               ["transport/frame.h", "scheduler/scheduler.h", "agent/config.h"]),
    "transport": ("transport/frame.c", ["common/tasktype.h", "transport/message.h"],
                  ["scheduler/scheduler.h", "agent/privsep.h"]),
    "scheduler": ("scheduler/policy.c", ["transport/sign.h", "scheduler/scheduler.h"],
                  ["agent/config.h"]),
    # The agent's library (tether_agent) links transport, not the scheduler:
    # only the root half (tether_schedd) may include scheduler.h.
    "agent": ("agent/privsep.c", ["transport/policy-answer.h", "agent/privsep.h"],
              ["scheduler/scheduler.h"]),
}


def command_for(source):
    for c in commands:
        if c["file"].endswith("/" + source):
            return c
    sys.exit("no compile command for %s in %s" % (source, build))


def compiles(entry, header):
    argv = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    with tempfile.TemporaryDirectory(prefix="tether-boundary-") as tmp:
        probe = os.path.join(tmp, "probe.c")
        with open(probe, "w") as f:
            f.write('#include "%s"\nint tether_probe;\n' % header)
        out = []
        skip = False
        for a in argv:
            if skip:
                skip = False
                continue
            if a in ("-o", "-MF", "-MT", "-c"):
                skip = True
                continue
            if a == "-MD" or a.endswith(".c"):
                continue
            out.append(a)
        out += ["-fsyntax-only", probe]
        r = subprocess.run(out, cwd=entry["directory"], capture_output=True, text=True)
        return r.returncode == 0, r.stderr


failed = 0
for part, (source, allowed, forbidden) in CASES.items():
    entry = command_for(source)
    for h in allowed:
        ok, err = compiles(entry, h)
        if not ok:
            print("FAIL %s: %s should be reachable:\n%s" % (part, h, err))
            failed += 1
    for h in forbidden:
        ok, _ = compiles(entry, h)
        if ok:
            print("FAIL %s: %s is reachable but the part does not link it" % (part, h))
            failed += 1
if failed:
    sys.exit(1)
print("include-boundary: every part sees exactly what it links")
