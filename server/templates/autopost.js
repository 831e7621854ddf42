// Submits the page's form at once: a SAML or WS-Federation answer posted to the application.
// A file rather than an inline script, so the page's CSP needs no 'unsafe-inline'.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("autopost");
  if (form) {
    form.submit();
  }
});
