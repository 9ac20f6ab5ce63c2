/* Keep the token for the API calls the pages make (sent as a Bearer header). */
"use strict";
document.getElementById("login-form").addEventListener("submit", () => {
  sessionStorage.setItem(Distillery.TOKEN_KEY, document.getElementById("token").value.trim());
});
