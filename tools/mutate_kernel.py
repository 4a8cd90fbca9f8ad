#!/usr/bin/env python3
# Mutation spot-check of one SIMD kernel (tests/README.md, "Mutation spot-checks"): apply one textual
# mutation to a source file, compile the AVX2 kernel object alone with the build's own command, swap it
# into a copy of the library, link the kernel-relevant tests against that copy, run them, and restore
# the source with its old modification time (the build does not rebuild). The build tree is only read.
#
#   tools/mutate_kernel.py NAME FILE OLD NEW [--build build] [--work /tmp/spnas-mutation]
#   e.g. tools/mutate_kernel.py tn_reversed ops/kernels/gemm_simd.h 'R av = V::set1(a[i]);' 'R av = V::set1(a[KB - 1 - i]);'
import argparse, json, os, shutil, subprocess
ap = argparse.ArgumentParser()
for a in ('name', 'path', 'old', 'new'): ap.add_argument(a)
ap.add_argument('--build', default='build')
ap.add_argument('--work', default='/tmp/spnas-mutation')
args = ap.parse_args()
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.abspath(os.path.join(SRC, args.build)); M = args.work
os.makedirs(M, exist_ok=True)
name, path, old, new = args.name, args.path, args.old, args.new
full = os.path.join(SRC, path)
orig = os.path.join(M, 'orig_' + os.path.basename(path))
shutil.copy2(full, orig)
text = open(full).read()
if text.count(old) != 1: raise SystemExit(f'{path}: {old!r} occurs {text.count(old)} times (must be once)')
line = text[:text.index(old)].count('\n') + 1
out = {}
try:
    open(full, 'w').write(text.replace(old, new))
    cmd = [e for e in json.load(open(B + '/compile_commands.json')) if e['file'].endswith('kernels_avx2.cpp')][0]['command']
    obj = os.path.join(M, 'obj', 'kernels_avx2.cpp.o'); os.makedirs(os.path.dirname(obj), exist_ok=True)
    cmd = cmd.replace('-o CMakeFiles/spnas_core.dir/ops/kernels/kernels_avx2.cpp.o', '-o ' + obj)
    subprocess.run('nice ' + cmd, shell=True, cwd=B, check=True)
finally:
    shutil.copy2(orig, full)  # restored with its old mtime: the main build does not rebuild
shutil.copy2(B + '/libspnas_core.a', M + '/libspnas_core.a')
subprocess.run(['ar', 'r', M + '/libspnas_core.a', obj], check=True)
tests = {'test_kernels': [], 'test_ops': [], 'test_nas': [], 'test_learns': ['--test-case-exclude=*MNIST*'],
         'test_export': [], 'test_runs': []}
failed = []
for t, args in tests.items():
    link = open(f'{B}/CMakeFiles/{t}.dir/link.txt').read().strip()
    link = link.replace(' libspnas_core.a', ' ' + M + '/libspnas_core.a').replace(f'-o {t} ', f'-o {M}/{t} ')
    subprocess.run('nice ' + link, shell=True, cwd=B, check=True)
    wd = f'{M}/run/{t}'; os.makedirs(wd, exist_ok=True)
    r = subprocess.run([f'{M}/{t}'] + args, cwd=wd, capture_output=True, text=True)
    last = [l for l in r.stdout.splitlines() if 'assertions' in l or 'test cases' in l]
    print(f'{name}: {t}: exit {r.returncode} {" | ".join(last)}', flush=True)
    if r.returncode != 0: failed.append(t)
print(f'RESULT {name} ({path}:{line}): failed: {", ".join(failed) if failed else "NONE (survived)"}', flush=True)
