/* A frame with no form tells the page why, so the SDK's onFailure hears a specific error_code.
 * The page's origin is not trusted here (it may be the one refused), so the message goes to any
 * origin: it holds only the error code and the sentence the frame shows anyway.
 */
(function () {
  "use strict";
  var root = document.getElementById("closed");
  if (!root || window.parent === window) {
    return;
  }
  window.parent.postMessage(
    {
      source: "paydial",
      type: "failure",
      error: {
        error_code: root.dataset.errorCode,
        error_message: document.getElementById("closed-message").textContent,
      },
    },
    "*"
  );
})();
