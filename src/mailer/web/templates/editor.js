// mailer edit: the form works without this script. With it, the preview and the notes
// beside each field follow what you type, without pressing "Update the preview".
(function () {
  "use strict";
  var form = document.getElementById("editor");
  if (!form || !window.fetch || !window.DOMParser || !window.FormData) {
    return;
  }
  var timer = null;
  var busy = false;
  var again = false;

  function swap(next) {
    document.querySelectorAll("[data-live]").forEach(function (element) {
      var fresh = next.getElementById(element.id);
      if (fresh && fresh.innerHTML !== element.innerHTML) {
        element.innerHTML = fresh.innerHTML;
      }
    });
    // A field is marked invalid exactly when the fresh page marks it.
    form.querySelectorAll("input[id], textarea[id]").forEach(function (field) {
      var fresh = next.getElementById(field.id);
      if (!fresh) {
        return;
      }
      if (fresh.getAttribute("aria-invalid") === "true") {
        field.setAttribute("aria-invalid", "true");
      } else {
        field.removeAttribute("aria-invalid");
      }
    });
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    var data = new FormData(form);
    data.set("action", "preview");
    form.querySelectorAll("input[type=file]").forEach(function (input) {
      data.delete(input.name);
    });
    // Not form.action: the buttons named "action" hide that property.
    fetch(form.getAttribute("action"), { method: "POST", body: data, credentials: "same-origin" })
      .then(function (response) {
        return response.text();
      })
      .then(function (text) {
        swap(new DOMParser().parseFromString(text, "text/html"));
        document.documentElement.setAttribute("data-previewed", String(Date.now()));
      })
      .catch(function () {
        // The editor was stopped: the buttons still say what to do.
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  function soon(event) {
    if (event.target && event.target.type === "file") {
      return;
    }
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 500);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
})();
