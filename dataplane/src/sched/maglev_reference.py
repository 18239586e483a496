# Independent reference of the weighted Maglev in maglev.rs, written
# straight from the paper's loop; it produced the values pinned in
# maglev.rs `known_table_is_pinned`, `backend_key_is_pinned` (mod.rs) and
# `client_hash_is_pinned` (sh.rs). Run: python3 maglev_reference.py
MASK = (1 << 64) - 1
def splitmix64(z):
    z = (z + 0x9e3779b97f4a7c15) & MASK
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK
    return z ^ (z >> 31)
def fnv(bs):
    h = 0xcbf29ce484222325
    for b in bs:
        h ^= b; h = (h * 0x100000001b3) & MASK
    return h
def key(bs): return splitmix64(fnv(bs))
def perm(k, m):
    h1 = splitmix64(k); h2 = splitmix64(h1 ^ 0x6a09e667f3bcc908)
    return h1 % m, h2 % (m - 1) + 1
def build(m, backends):  # [(key, weight)]
    el = sorted((k, i, w) for i, (k, w) in enumerate(backends) if w > 0)
    wmax = max(w for _, _, w in el)
    st = []
    for k, i, w in el:
        off, skip = perm(k, m); st.append([i, w, 0, off, skip])
    t = [None] * m; filled = 0
    while True:
        for s in st:
            s[2] += s[1]
            if s[2] < wmax: continue
            s[2] -= wmax
            c = s[3]
            # paper's form: position j of the permutation, no incremental trick
            while t[c] is not None: c = (c + s[4]) % m
            t[c] = s[0]; s[3] = (c + s[4]) % m; filled += 1
            if filled == m: return t
print(hex(key(b"198.18.10.1:80")))
print(hex(key(bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 1]))))
m = 65537
b = [(key(f"198.18.10.{i}:80".encode()), w) for i, w in enumerate([1, 1, 2, 1])]
print(perm(b[0][0], m))
t = build(m, b)
print(t[:16], t[-1])
print(hex(fnv(bytes(x for e in t for x in e.to_bytes(2, 'big')))))
print(t[0x0123456789abcdef % m])
