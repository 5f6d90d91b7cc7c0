# Run in profile.sh's OUT directory: profile-compare.py TAG_A TAG_B, with NA / NB the
# sidecars in each capture (2 for two hops). µs per request per sidecar per function.
import subprocess, re, sys
def load(tag):
    req = int(open(f'req-{tag}').read().split(':')[1])
    out = subprocess.run(['perf','report','-i',f'perf-{tag}.data','--no-children','--sort','dso,sym','-g','none','--stdio','-n','-F','sample,dso,sym'],capture_output=True,text=True).stdout
    d={}
    for line in out.splitlines():
        m=re.match(r'\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*)$',line)
        if m:
            n,dso,k,sym=m.groups(); d[(dso,sym.strip()[:70])]=int(n)
    return req,d
F=4999
import os; NA=int(os.environ.get("NA",2)); NB=int(os.environ.get("NB",2))
ra,a=load(sys.argv[1]); rb,b=load(sys.argv[2])
ua=lambda n: n/F*1e6/ra/NA  # per request per sidecar (2 sidecars)
ub=lambda n: n/F*1e6/rb/NB
keys=sorted(set(a)|set(b), key=lambda k: -(ua(a.get(k,0))-ub(b.get(k,0))))
print('total', round(ua(sum(a.values())),2), round(ub(sum(b.values())),2))
for dsok in ['[kernel.kallsyms]']:
    print('kernel', round(ua(sum(v for k,v in a.items() if k[0]==dsok)),2), round(ub(sum(v for k,v in b.items() if k[0]==dsok)),2))
for k in keys[:45]:
    print(f"{ua(a.get(k,0)):6.2f} {ub(b.get(k,0)):6.2f}  {k[0][:18]:18} {k[1]}")
