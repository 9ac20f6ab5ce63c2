/* Keep the token for the API calls the pages make (sent as a Bearer header). A pasted shell line,
   `export DISTILLERY_TOKEN=...` or `DISTILLERY_TOKEN="..."`, counts as its token: the same rule as
   server.auth.pasted_token, which the form's server side applies. */
"use strict";
function pastedToken(text) {
  let t = (text || "").trim();
  const m = /^\s*(?:export\s+)?DISTILLERY_TOKEN\s*=\s*([\s\S]*?)\s*;?\s*$/.exec(t);
  if (m) {
    t = m[1];
    if (t.length >= 2 && t[0] === t[t.length - 1] && (t[0] === "'" || t[0] === '"')) t = t.slice(1, -1).trim();
  }
  return t;
}
document.getElementById("login-form").addEventListener("submit", () => {
  sessionStorage.setItem(Distillery.TOKEN_KEY, pastedToken(document.getElementById("token").value));
});
