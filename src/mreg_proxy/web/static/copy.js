// Copy buttons: the one script of the web page. Without it the text stays visible to select.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = button.getAttribute("data-copy");
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { button.textContent = "Select and copy"; });
      } else {  // plain HTTP to another host: the clipboard API is not offered there
        var field = document.createElement("textarea");
        field.value = text;
        document.body.appendChild(field);
        field.select();
        if (document.execCommand("copy")) { done(); }
        document.body.removeChild(field);
      }
    });
  });
});
