/* The hosted card form. Checks every entry before sending, charges same-origin with the
 * session's CSRF token, and tells the parent page only results, with an explicit target origin.
 * Brands, their ranges, lengths and code lengths come from the server's table in data-brands.
 */
(function () {
  "use strict";

  var root = document.getElementById("paydial");
  if (!root) {
    return;
  }
  var parentOrigin = root.dataset.parentOrigin || "";
  var form = document.getElementById("card-form");

  function post(message) {
    message.source = "paydial";
    if (parentOrigin && window.parent !== window) {
      window.parent.postMessage(message, parentOrigin);
    }
  }

  function height() {
    return Math.ceil(root.getBoundingClientRect().height);
  }

  /* ---- theme, labels and fields (from the project, then from the parent page) ---- */

  var THEME_VARS = {
    primary: "--pd-primary",
    primary_text: "--pd-primary-text",
    background: "--pd-background",
    text: "--pd-text",
    muted: "--pd-muted",
    border: "--pd-border",
    error: "--pd-error",
    success: "--pd-success",
    radius: "--pd-radius",
    font: "--pd-font",
  };
  var SAFE_CSS_VALUE = /^[#(),.%\w\s-]{1,64}$/;

  function applyTheme(theme) {
    Object.keys(theme || {}).forEach(function (key) {
      var value = theme[key];
      if (THEME_VARS[key] && typeof value === "string" && SAFE_CSS_VALUE.test(value)) {
        document.documentElement.style.setProperty(THEME_VARS[key], value);
      }
    });
  }

  function applyLabels(labels) {
    Object.keys(labels || {}).forEach(function (key) {
      var text = labels[key];
      if (typeof text !== "string" || !text || text.length > 80) {
        return;
      }
      document.querySelectorAll('[data-label="' + CSS.escape(key) + '"]').forEach(function (el) {
        el.textContent = text.replace("{amount}", root.dataset.amount || "");
      });
    });
  }

  function applyFields(fields) {
    Object.keys(fields || {}).forEach(function (key) {
      var wrapper = document.querySelector('[data-field="' + CSS.escape(key) + '"]');
      if (!wrapper || typeof fields[key] !== "boolean") {
        return;
      }
      // A field the project requires stays, whatever the page asks.
      wrapper.hidden = !fields[key] && wrapper.dataset.required !== "true";
    });
  }

  window.addEventListener("message", function (event) {
    if (!parentOrigin || event.origin !== parentOrigin || event.source !== window.parent) {
      return;
    }
    var msg = event.data;
    if (!msg || msg.source !== "paydial") {
      return;
    }
    if (msg.type === "theme") {
      applyTheme(msg.value);
    } else if (msg.type === "labels") {
      applyLabels(msg.value);
    } else if (msg.type === "fields") {
      applyFields(msg.value);
    }
  });

  applyTheme(JSON.parse(root.dataset.theme || "{}"));

  if (typeof ResizeObserver === "function") {
    new ResizeObserver(function () {
      post({ type: "resize", height: height() });
    }).observe(root);
  }
  post({ type: "ready", height: height() });

  if (!form) {
    return; // the session is closed; the page says why
  }

  /* ---- card rules: the server's brand table (gateways/cards.py); it checks them again ---- */

  var BRANDS = JSON.parse(root.dataset.brands || "{}");
  // The project's countries' postal formats (ivr/cards.py POSTAL_FORMATS); the server checks again.
  var POSTAL = JSON.parse(root.dataset.postal || "{}");
  var UNKNOWN_CODE_LENGTH = 3; // what the server asks for while the brand is unknown
  var accepted = (root.dataset.acceptedBrands || "").split(" ").filter(Boolean);

  // The brand whose range the prefix falls in, with that range's lengths; ranges never overlap.
  function brandOf(digits) {
    var ids = Object.keys(BRANDS);
    for (var i = 0; i < ids.length; i++) {
      var ranges = BRANDS[ids[i]].ranges;
      for (var j = 0; j < ranges.length; j++) {
        var low = ranges[j][0];
        var head = digits.slice(0, low.length);
        if (head.length === low.length && low <= head && head <= ranges[j][1]) {
          var rules = BRANDS[ids[i]];
          return { id: ids[i], name: rules.name, code: rules.code, lengths: ranges[j][2] };
        }
      }
    }
    return null;
  }

  function luhn(digits) {
    var sum = 0;
    for (var i = 0; i < digits.length; i++) {
      var d = Number(digits.charAt(digits.length - 1 - i));
      if (i % 2) {
        d = d > 4 ? d * 2 - 9 : d * 2;
      }
      sum += d;
    }
    return sum % 10 === 0;
  }

  function groupsFor(brand, count) {
    if (brand && brand.id === "amex") {
      return [4, 6, 5];
    }
    if (brand && brand.id === "diners" && count <= 14) { // longer Diners numbers group by four
      return [4, 6, 4];
    }
    return [4, 4, 4, 4, 3];
  }

  function onlyDigits(value) {
    return value.replace(/\D/g, "");
  }

  function formatNumber(digits) {
    var groups = groupsFor(brandOf(digits), digits.length);
    var parts = [];
    var at = 0;
    for (var i = 0; i < groups.length && at < digits.length; i++) {
      parts.push(digits.slice(at, at + groups[i]));
      at += groups[i];
    }
    return parts.join(" ");
  }

  function formatExpiry(digits) {
    return digits.length > 2 ? digits.slice(0, 2) + " / " + digits.slice(2) : digits;
  }

  function codeLength(brand) {
    return brand ? brand.code : UNKNOWN_CODE_LENGTH;
  }

  var inputs = {
    card_number: document.getElementById("card_number"),
    expiry: document.getElementById("expiry"),
    cvc: document.getElementById("cvc"),
    cardholder_name: document.getElementById("cardholder_name"),
    postal_code: document.getElementById("postal_code"),
  };
  var brandBadge = document.getElementById("card_brand");
  var submit = document.getElementById("submit");
  var formError = document.getElementById("form-error");
  var declined = document.getElementById("declined");
  var success = document.getElementById("success");

  function cardDigits() {
    return onlyDigits(inputs.card_number.value);
  }

  function parseExpiry() {
    var digits = onlyDigits(inputs.expiry.value);
    return { month: Number(digits.slice(0, 2)), year: 2000 + Number(digits.slice(2, 4)), digits: digits };
  }

  function shown(name) {
    var wrapper = document.querySelector('[data-field="' + name + '"]');
    return !wrapper || !wrapper.hidden;
  }

  var CHECKS = {
    card_number: function () {
      var digits = cardDigits();
      var brand = brandOf(digits);
      if (!digits) return "Enter the card number.";
      if (digits.length < 12) return "The card number is too short.";
      if (!luhn(digits)) return "This card number is not valid. Check the digits.";
      if (brand && brand.lengths.indexOf(digits.length) < 0) {
        return "The card number has the wrong number of digits.";
      }
      if (accepted.length && (!brand || accepted.indexOf(brand.id) < 0)) {
        return (brand ? brand.name : "This") + " cards are not accepted here.";
      }
      return "";
    },
    expiry: function () {
      var exp = parseExpiry();
      if (!exp.digits) return "Enter the expiry date.";
      if (exp.digits.length !== 4) return "Enter the expiry as MM / YY.";
      if (exp.month < 1 || exp.month > 12) return "The month must be between 01 and 12.";
      var now = new Date();
      if (exp.year < now.getFullYear() || (exp.year === now.getFullYear() && exp.month < now.getMonth() + 1)) {
        return "This card has expired.";
      }
      if (exp.year > now.getFullYear() + 20) return "Check the expiry year.";
      return "";
    },
    cvc: function () {
      var want = codeLength(brandOf(cardDigits()));
      var got = onlyDigits(inputs.cvc.value).length;
      if (!got) return "Enter the security code.";
      if (got !== want) return "The security code is " + want + " digits for this card.";
      return "";
    },
    cardholder_name: function () {
      if (!shown("cardholder_name")) return "";
      return inputs.cardholder_name.value.trim() ? "" : "Enter the name on the card.";
    },
    postal_code: function () {
      if (!shown("postal_code")) return "";
      var code = inputs.postal_code.value.trim();
      if (!code) return "Enter the billing postal code.";
      return new RegExp(POSTAL.pattern).test(code) ? "" : POSTAL.message;
    },
  };

  function showError(name, message) {
    var input = inputs[name];
    var slot = document.getElementById(name + "-error");
    if (input && slot) {
      input.setAttribute("aria-invalid", message ? "true" : "false");
      slot.textContent = message;
    }
  }

  function check(name) {
    var message = CHECKS[name]();
    showError(name, message);
    return message;
  }

  /* ---- typing ---- */

  function reformat(input, maxDigits, format) {
    var caretDigits = onlyDigits(input.value.slice(0, input.selectionStart || 0)).length;
    var digits = onlyDigits(input.value).slice(0, maxDigits);
    var value = format(digits);
    input.value = value;
    var pos = 0;
    var seen = 0;
    while (pos < value.length && seen < caretDigits) {
      if (/\d/.test(value.charAt(pos))) seen++;
      pos++;
    }
    input.setSelectionRange(pos, pos);
  }

  inputs.card_number.addEventListener("input", function () {
    reformat(inputs.card_number, 19, formatNumber);
    var brand = brandOf(cardDigits());
    brandBadge.textContent = brand ? brand.name : "";
    inputs.cvc.maxLength = codeLength(brand);
  });
  inputs.expiry.addEventListener("input", function () {
    reformat(inputs.expiry, 4, formatExpiry);
  });
  inputs.cvc.addEventListener("input", function () {
    reformat(inputs.cvc, 4, function (d) { return d; });
  });

  Object.keys(inputs).forEach(function (name) {
    inputs[name].addEventListener("blur", function () {
      if (inputs[name].value) check(name);
    });
    inputs[name].addEventListener("input", function () {
      if (inputs[name].getAttribute("aria-invalid") === "true") check(name);
    });
  });

  /* ---- paying ---- */

  function clearCard() {
    inputs.card_number.value = "";
    inputs.expiry.value = "";
    inputs.cvc.value = "";
    brandBadge.textContent = "";
  }

  function show(section) {
    form.hidden = section !== form;
    declined.hidden = section !== declined;
    success.hidden = section !== success;
    section.focus();
  }

  function busy(on) {
    submit.disabled = on;
    submit.setAttribute("aria-busy", on ? "true" : "false");
  }

  function onSuccess(body) {
    clearCard();
    var known = Object.prototype.hasOwnProperty.call(BRANDS, body.card_brand);
    document.getElementById("success-detail").textContent =
      (known ? BRANDS[body.card_brand].name : "Card") + " ending " + body.card_last4 +
      (body.confirmation_code ? ". Confirmation code " + body.confirmation_code + "." : ".");
    show(success);
    post({
      type: "success",
      result: {
        transaction_id: body.transaction_id,
        confirmation_code: body.confirmation_code,
        card_brand: body.card_brand,
        card_last4: body.card_last4,
        amount_cents: body.amount_cents,
        currency: body.currency,
        status: body.status,
      },
    });
  }

  function onDeclined(body) {
    clearCard();
    var retry = body.attempts_remaining > 0;
    document.getElementById("declined-message").textContent =
      body.error_message + (retry ? "" : " No more attempts are allowed for this payment.");
    document.getElementById("try-again").hidden = !retry;
    show(declined);
    post({ type: "failure", error: { error_code: body.error_code, error_message: body.error_message } });
  }

  function onClosed(code, message) {
    clearCard();
    document.getElementById("declined-message").textContent = message;
    document.getElementById("try-again").hidden = true;
    show(declined);
    post({ type: "failure", error: { error_code: code, error_message: message } });
  }

  function onInvalid(detail) {
    var focused = false;
    (detail || []).forEach(function (item) {
      var name = item.loc && item.loc[item.loc.length - 1];
      if (name === "exp_month" || name === "exp_year") name = "expiry";
      if (inputs[name]) {
        showError(name, item.msg);
        if (!focused) {
          inputs[name].focus();
          focused = true;
        }
      }
    });
    if (!focused) formError.textContent = "Some details were not accepted. Check the form.";
  }

  var CLOSED = {
    404: ["session_not_found", "This payment link is not valid."],
    409: ["session_closed", "This payment is no longer open."],
    410: ["session_expired", "This payment link has expired."],
  };

  var RATE_LIMITED = "Too many payment attempts. Please try again later.";

  function handle(status, body) {
    if (status === 200) return onSuccess(body);
    if (status === 402) return onDeclined(body);
    if (status === 422) return onInvalid(body.detail);
    // A locked-out card: say why and offer another card while attempts remain.
    if (status === 429 && body && body.error_code === "velocity_limited") return onDeclined(body);
    if (status === 429) {
      // "charges_paused" from the merchant's decline breaker, else one of the rate limits.
      return onClosed((body && body.error_code) || "rate_limited", (body && body.detail) || RATE_LIMITED);
    }
    var closed = CLOSED[status];
    if (closed) return onClosed(closed[0], (body && body.detail) || closed[1]);
    formError.textContent = "The payment could not be completed. Please try again.";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    formError.textContent = "";
    var firstInvalid = null;
    Object.keys(CHECKS).forEach(function (name) {
      if (check(name) && !firstInvalid) firstInvalid = inputs[name];
    });
    if (firstInvalid) {
      firstInvalid.focus();
      return;
    }
    var exp = parseExpiry();
    var payload = {
      card_number: cardDigits(),
      exp_month: exp.month,
      exp_year: exp.year,
      cvc: onlyDigits(inputs.cvc.value),
    };
    if (shown("postal_code")) payload.postal_code = inputs.postal_code.value.trim();
    if (shown("cardholder_name")) payload.cardholder_name = inputs.cardholder_name.value.trim();
    busy(true);
    fetch(root.dataset.chargeUrl, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json", "X-Paydial-CSRF": root.dataset.csrf },
      body: JSON.stringify(payload),
    })
      .then(function (response) {
        return response.json().then(
          function (body) { handle(response.status, body); },
          function () { handle(response.status, null); }
        );
      })
      .catch(function () {
        formError.textContent = "The payment service could not be reached. Check your connection and try again.";
      })
      .then(function () {
        busy(false);
      });
  });

  document.getElementById("try-again").addEventListener("click", function () {
    show(form);
    inputs.card_number.focus();
  });
})();
