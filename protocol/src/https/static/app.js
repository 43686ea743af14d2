// Coffer web UI: uploads (picker and drag-and-drop, one streamed PUT per file with its own
// progress bar, asking before a file of the same name is replaced), new folder, rename (one
// name, never a move), delete and column sorting. Every state-changing call
// carries the page's CSRF token; the session cookie is sent by the browser.
"use strict";

(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (!meta) return; // the login page needs no script
  const csrf = meta.content;
  const here = document.body.dataset.path || "/";
  const status = document.getElementById("status");

  const encodePath = (p) =>
    p.split("/").filter((s) => s.length > 0).map(encodeURIComponent).join("/");
  const join = (dir, name) => (dir === "/" ? "/" : dir + "/") + name;
  const fileUrl = (path) => "/api/v1/files/" + encodePath(path);

  function showError(text) {
    status.textContent = text;
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      return body.message || body.code || resp.statusText;
    } catch (_) {
      return resp.status + " " + resp.statusText;
    }
  }

  async function call(method, url, body) {
    const headers = { "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (resp.status === 401) {
      window.location.assign("/login");
      return false;
    }
    if (!resp.ok) {
      showError(await errorText(resp));
      return false;
    }
    return true;
  }

  // ---- uploads ----
  // A file whose name is taken is never replaced silently: the page asks (replace, keep both
  // under a free name, or skip), and every PUT that is not a chosen replace carries
  // `If-None-Match: *`, so the server refuses (412) to replace a file that appeared meanwhile.
  const list = document.getElementById("uploads");
  let running = 0;
  const uploading = new Set();

  const rowNames = (kind) =>
    Array.from(document.querySelectorAll("#listing tr[data-name]"))
      .filter((r) => !kind || r.dataset.kind === kind)
      .map((r) => r.dataset.name);

  function freeName(name) {
    const taken = new Set(rowNames().concat(Array.from(uploading)));
    const dot = name.lastIndexOf(".");
    const stem = dot > 0 ? name.slice(0, dot) : name;
    const ext = dot > 0 ? name.slice(dot) : "";
    for (let n = 1; ; n += 1) {
      const candidate = stem + " (" + n + ")" + ext;
      if (!taken.has(candidate)) return candidate;
    }
  }

  // One question at a time, in the order the files were chosen.
  const dialog = document.getElementById("conflict");
  let asking = Promise.resolve();
  function ask(name) {
    const answer = asking.then(
      () =>
        new Promise((resolve) => {
          document.getElementById("conflict-name").textContent = name;
          const choose = (choice) => () => {
            dialog.close();
            resolve(choice);
          };
          const buttons = {
            "conflict-replace": "replace",
            "conflict-keep": "keep",
            "conflict-cancel": "skip",
          };
          for (const [id, choice] of Object.entries(buttons)) {
            document.getElementById(id).onclick = choose(choice);
          }
          dialog.oncancel = choose("skip"); // Escape
          dialog.showModal();
        })
    );
    asking = answer.catch(() => {});
    return answer;
  }

  let stored = 0;
  function finished() {
    running -= 1;
    if (running === 0 && stored > 0 && !list.querySelector(".failed")) {
      setTimeout(() => window.location.reload(), 400);
    }
  }

  function upload(file) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "fname";
    label.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = "0%";
    li.append(label, bar, pct);
    list.append(li);
    running += 1;

    const fail = (message) => {
      li.classList.add("failed");
      pct.textContent = "Failed";
      showError(file.name + ": " + message);
      finished();
    };

    const decide = async (name) => {
      const choice = await ask(name);
      if (choice === "replace") {
        send(name, true);
      } else if (choice === "keep") {
        send(freeName(name), false);
      } else {
        li.classList.add("skipped");
        pct.textContent = "Skipped";
        finished();
      }
    };

    const send = (name, replace) => {
      label.textContent = name;
      uploading.add(name);
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", fileUrl(join(here, name)));
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      if (!replace) xhr.setRequestHeader("If-None-Match", "*");
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable && e.total > 0) {
          const p = Math.floor((e.loaded / e.total) * 100);
          bar.value = p;
          pct.textContent = p + "%";
        }
      };
      xhr.onload = () => {
        uploading.delete(name);
        if (xhr.status >= 200 && xhr.status < 300) {
          li.classList.add("done");
          stored += 1;
          bar.value = 100;
          pct.textContent = "Done";
          finished();
        } else if (xhr.status === 412) {
          decide(name); // someone else created it meanwhile
        } else {
          let message = xhr.status + " " + xhr.statusText;
          try {
            message = JSON.parse(xhr.responseText).message || message;
          } catch (_) { /* not JSON */ }
          fail(message);
        }
      };
      xhr.onerror = () => {
        uploading.delete(name);
        fail("the connection failed");
      };
      xhr.send(file);
    };

    if (rowNames("file").includes(file.name)) {
      decide(file.name);
    } else {
      send(file.name, false);
    }
  }

  function uploadAll(files) {
    status.textContent = "";
    for (const f of files) upload(f);
  }

  const picker = document.getElementById("picker");
  picker.addEventListener("change", () => {
    uploadAll(Array.from(picker.files));
    picker.value = "";
  });

  let depth = 0;
  document.addEventListener("dragenter", (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
    depth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length > 0) {
      uploadAll(Array.from(e.dataTransfer.files));
    }
  });

  // ---- folder actions ----
  document.getElementById("new-folder").addEventListener("click", async () => {
    const name = window.prompt("Name of the new folder");
    if (!name) return;
    if (await call("POST", "/api/v1/folders/" + encodePath(join(here, name)))) {
      window.location.reload();
    }
  });

  document.getElementById("listing").addEventListener("click", async (e) => {
    const button = e.target.closest("button");
    const row = e.target.closest("tr[data-name]");
    if (!button || !row) return;
    const name = row.dataset.name;
    const path = join(here, name);
    if (button.classList.contains("rename")) {
      const to = window.prompt("New name", name);
      if (!to || to === name) return;
      // Rename renames: a name with a separator, or "." / "..", would move the entry.
      if (/[\/\\]/.test(to) || to === "." || to === "..") {
        showError("A name cannot contain “/” or “\\” and cannot be “.” or “..”.");
        return;
      }
      if (await call("POST", "/api/v1/move", { from: path, name: to })) {
        window.location.reload();
      }
    } else if (button.classList.contains("delete")) {
      const what = row.dataset.kind === "dir" ? "the folder" : "the file";
      if (!window.confirm("Delete " + what + " “" + name + "”?")) return;
      if (await call("DELETE", fileUrl(path))) {
        row.remove();
      }
    }
  });

  // ---- sorting (folders stay first) ----
  const tbody = document.querySelector("#listing tbody");
  document.querySelectorAll("th.sortable").forEach((th) => {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      const asc = th.getAttribute("aria-sort") !== "ascending";
      document.querySelectorAll("th.sortable").forEach((o) => o.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      const rows = Array.from(tbody.querySelectorAll("tr[data-name]"));
      const value = (r) =>
        key === "name" ? r.dataset.name.toLowerCase() : Number(r.dataset[key]);
      rows.sort((a, b) => {
        const da = a.dataset.kind === "dir" ? 0 : 1;
        const db = b.dataset.kind === "dir" ? 0 : 1;
        if (da !== db) return da - db;
        const va = value(a);
        const vb = value(b);
        const c = va < vb ? -1 : va > vb ? 1 : 0;
        return asc ? c : -c;
      });
      rows.forEach((r) => tbody.append(r));
    });
  });
})();
