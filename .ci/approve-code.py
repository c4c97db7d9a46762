#!/usr/bin/env python3
"""Approves a user code on a roger-sim server as the tenant admin, the way the phone app does (docs/protocol.md §3.4:
authorization code + PKCE S256 through the login form with its CSRF token; then POST /api/v1/codes/approve, §3.11).
Standard library only. Usage: approve-code.py API_ORIGIN USER_CODE [USER PASSWORD]"""
import json, re, sys, urllib.request, urllib.parse, http.cookiejar, hashlib, base64, time
api = sys.argv[1]; code = sys.argv[2]
user = sys.argv[3] if len(sys.argv) > 3 else "admin"
password = sys.argv[4] if len(sys.argv) > 4 else "admin-pass"
verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
q = dict(response_type="code", client_id="roger-mobile", redirect_uri="roger://callback", code_challenge=challenge, code_challenge_method="S256", state="s", scope="roger.app")
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
cj = http.cookiejar.CookieJar()
op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj), NoRedirect)
html = op.open(api + "/oauth/authorize?" + urllib.parse.urlencode(q)).read().decode()
csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
form = dict(q, tenant="acme", username=user, password=password, csrf_token=csrf)
try:
    op.open(api + "/oauth/authorize", data=urllib.parse.urlencode(form).encode())
    sys.exit("login did not redirect (wrong credentials?)")
except urllib.error.HTTPError as e:
    if e.code != 302:
        sys.exit(f"login failed: HTTP {e.code}")
    loc = e.headers["Location"]
c = urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)["code"][0]
tok = json.load(urllib.request.urlopen(api + "/oauth/token", data=urllib.parse.urlencode(dict(grant_type="authorization_code", code=c, redirect_uri="roger://callback", code_verifier=verifier, client_id="roger-mobile")).encode()))
req = urllib.request.Request(api + "/api/v1/codes/approve", data=json.dumps({"user_code": code}).encode(), headers={"content-type": "application/json", "authorization": "Bearer " + tok["access_token"]})
print(urllib.request.urlopen(req).status)
