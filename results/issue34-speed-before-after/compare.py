import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
bad = 0
if set(a) != set(b):
    print('keys differ:', sorted(set(a) ^ set(b))[:10]); bad += 1
for k in sorted(set(a) & set(b)):
    if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k]):
        bad += 1
        if bad < 30: print('DIFF', k, np.max(np.abs(a[k] - b[k])) if a[k].shape == b[k].shape else (a[k].shape, b[k].shape))
print('differ:', bad, 'of', len(a))
