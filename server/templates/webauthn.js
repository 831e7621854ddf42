// Passkey ceremonies for idflow's pages. The server puts the WebAuthn options (as webauthn-rs
// serialises them, binary fields in base64url) in a <script type="application/json"> element;
// this converts them for the browser API, runs the ceremony when the form's button is pressed,
// and posts the browser's answer back as JSON in the form's `credential` field.
(function () {
  "use strict";

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var raw = atob(base64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    if (!buffer) return null;
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: toBytes(c.id) });
    });
  }

  async function get(optionsJson) {
    var options = JSON.parse(optionsJson).publicKey;
    options.challenge = toBytes(options.challenge);
    options.allowCredentials = withIds(options.allowCredentials);
    var credential = await navigator.credentials.get({ publicKey: options });
    var r = credential.response;
    return JSON.stringify({
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      extensions: credential.getClientExtensionResults(),
      response: {
        authenticatorData: toText(r.authenticatorData),
        clientDataJSON: toText(r.clientDataJSON),
        signature: toText(r.signature),
        userHandle: toText(r.userHandle),
      },
    });
  }

  async function create(optionsJson) {
    var options = JSON.parse(optionsJson).publicKey;
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    options.excludeCredentials = withIds(options.excludeCredentials);
    var credential = await navigator.credentials.create({ publicKey: options });
    var r = credential.response;
    return JSON.stringify({
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      extensions: credential.getClientExtensionResults(),
      response: {
        attestationObject: toText(r.attestationObject),
        clientDataJSON: toText(r.clientDataJSON),
        transports: r.getTransports ? r.getTransports() : [],
      },
    });
  }

  window.idflowWebauthn = { get: get, create: create };

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-webauthn]").forEach(function (form) {
      var mode = form.getAttribute("data-webauthn");
      var options = document.getElementById(form.getAttribute("data-options")).textContent;
      var status = form.querySelector(".webauthn-status");
      form.querySelector("button.webauthn").addEventListener("click", async function (event) {
        event.preventDefault();
        try {
          var answer = mode === "create" ? await create(options) : await get(options);
          form.querySelector("input[name=credential]").value = answer;
          form.submit();
        } catch (error) {
          if (status) status.textContent = "The passkey request did not complete: " + error.message;
        }
      });
    });
  });
})();
