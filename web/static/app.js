// digitize scanning desk: drag-and-drop upload with progress, then the job's state until it is stored.
// No framework, no inline script (the CSP allows scripts from this site only).
"use strict";
(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const drop = document.getElementById("drop");
  const input = document.getElementById("upload-files");
  const list = document.getElementById("upload-progress");

  function line(text) {
    const li = document.createElement("li");
    li.textContent = text;
    list.prepend(li);
    return li;
  }

  function poll(li, name, jobId) {
    fetch("/desk/jobs/" + encodeURIComponent(jobId), { credentials: "same-origin" })
      .then((r) => r.json())
      .then((job) => {
        li.textContent = name + ": " + (job.label || job.state) + (job.reason ? " (" + job.reason + ")" : "");
        li.className = job.state;
        li.dataset.state = job.state;
        if (job.state === "queued" || job.state === "running") setTimeout(() => poll(li, name, jobId), 1000);
      })
      .catch(() => setTimeout(() => poll(li, name, jobId), 3000));
  }

  function send(file) {
    const li = line(file.name + ": 0 %");
    const data = new FormData();
    data.append("file", file, file.name);
    const caseId = document.getElementById("upload-case").value.trim();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/desk/upload" + (caseId ? "?case_id=" + encodeURIComponent(caseId) : ""));
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) li.textContent = file.name + ": " + Math.round((100 * e.loaded) / e.total) + " %";
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = { message: xhr.statusText }; }
      if (xhr.status === 202) {
        poll(li, file.name, body.job_id);
      } else {
        li.textContent = file.name + ": " + list.dataset.failed + " (" + (body.message || xhr.status) + ")";
        li.className = "failed";
        li.dataset.state = "failed";
      }
    };
    xhr.send(data);
  }

  input.addEventListener("change", () => { Array.from(input.files).forEach(send); input.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => Array.from(e.dataTransfer.files).forEach(send));
})();
