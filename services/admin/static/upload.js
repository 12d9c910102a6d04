// Upload with a progress bar: the form goes to POST /files (the API) by XMLHttpRequest, whose
// upload.onprogress reports the bytes sent. The session cookie authenticates the request, so the
// API wants the session's CSRF token in the X-CSRF-Token header.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form) { return; }
  var bar = document.getElementById("u-progress");
  var percent = document.getElementById("u-percent");
  var result = document.getElementById("u-result");
  var button = form.querySelector("button[type=submit]");

  function show(text, link, failed) {
    result.textContent = "";
    var p = document.createElement("p");
    p.className = "flash " + (failed ? "error" : "info");
    p.textContent = text + " ";
    if (link) {
      var a = document.createElement("a");
      a.href = link;
      a.textContent = "Open the file";
      p.appendChild(a);
    }
    result.appendChild(p);
  }

  function progress(value) {
    bar.value = value;
    bar.textContent = value + "%";
    percent.textContent = value + "%";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) { progress(Math.round(100 * e.loaded / e.total)); }
    };
    xhr.onload = function () {
      var reply = {};
      try { reply = JSON.parse(xhr.responseText); } catch (ignored) { reply = {error: xhr.statusText}; }
      button.disabled = false;
      if (xhr.status === 202) {
        progress(100);
        show("Uploaded: " + reply.message + " (file " + reply.file_id + ").", "/console/files/" + reply.file_id, false);
      } else {
        show("Upload refused (" + xhr.status + "): " + (reply.error || xhr.statusText), null, true);
      }
    };
    xhr.onerror = function () {
      button.disabled = false;
      show("Upload failed: the server could not be reached.", null, true);
    };
    button.disabled = true;
    progress(0);
    show("Uploading…", null, false);
    xhr.send(new FormData(form));
  });
})();
