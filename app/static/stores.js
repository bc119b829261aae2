// The stores page: list (filter, sort), upload (drop or pick, with progress), delete.
import {
  api,
  apiPath,
  confirmAction,
  element,
  errorText,
  formatBytes,
  formatCount,
  getJson,
  problemOf,
  root,
  sendFile,
  showMessage,
} from "./ui.js";

const rows = document.querySelector("#stores tbody");
const filter = document.getElementById("filter");
let stores = [];
let sortKey = "name";
let ascending = true;

async function load() {
  const all = [];
  let path = "/stores?limit=1000";
  while (path) {
    const page = await getJson(path);
    all.push(...page.stores);
    path = page.next ? apiPath(page.next) : null;
  }
  stores = all;
  render();
}

function compare(a, b) {
  const x = a[sortKey];
  const y = b[sortKey];
  const order = x < y ? -1 : x > y ? 1 : 0;
  return ascending ? order : -order;
}

function render() {
  const wanted = filter.value.trim().toLowerCase();
  const shown = stores.filter((store) => store.name.toLowerCase().includes(wanted)).sort(compare);
  rows.replaceChildren(...shown.map(row));
  document.getElementById("count").textContent =
    shown.length === stores.length
      ? `${formatCount(stores.length)} stores`
      : `${formatCount(shown.length)} of ${formatCount(stores.length)} stores`;
  document.getElementById("empty").hidden = stores.length > 0;
  for (const button of document.querySelectorAll("th button")) {
    const active = button.dataset.sort === sortKey;
    button.parentElement.setAttribute(
      "aria-sort",
      active ? (ascending ? "ascending" : "descending") : "none",
    );
  }
}

function row(store) {
  const remove = element("button", { type: "button", class: "danger small" }, "delete");
  remove.addEventListener("click", () => removeStore(store.name));
  const created = store.created.replace("T", " ").replace("Z", " UTC");
  return element(
    "tr",
    { "data-name": store.name },
    element("td", {}, element("a", { href: `${root}/ui/stores/${store.name}` }, store.name)),
    element("td", { class: "num", title: `${formatCount(store.size)} bytes` }, formatBytes(store.size)),
    element("td", { class: "num" }, formatCount(store.num_keys)),
    element("td", {}, created),
    element(
      "td",
      { class: "actions" },
      element("a", { href: store.file_url, download: "", class: "api" }, "download"),
      " ",
      remove,
    ),
  );
}

async function removeStore(name) {
  if (!(await confirmAction(`Delete the store ${name}? This cannot be undone.`, "Delete"))) return;
  const response = await api(`/stores/${name}`, { method: "DELETE" });
  if (!response.ok) {
    const problem = problemOf(response.status, await response.text());
    showMessage(`Could not delete ${name}: ${problem.detail} (${problem.code})`);
    return;
  }
  showMessage(`Deleted ${name}.`, "info");
  stores = stores.filter((store) => store.name !== name);
  render();
}

for (const button of document.querySelectorAll("th button")) {
  button.addEventListener("click", () => {
    ascending = button.dataset.sort === sortKey ? !ascending : true;
    sortKey = button.dataset.sort;
    render();
  });
}
filter.addEventListener("input", render);

// --- uploads --------------------------------------------------------------------------

const drop = document.getElementById("upload");
const picker = document.getElementById("file-input");
const nameInput = document.getElementById("upload-name");
const progress = document.getElementById("upload-progress");
const bar = document.getElementById("upload-bar");
const progressText = document.getElementById("upload-text");
const result = document.getElementById("upload-result");

function stem(filename) {
  const dot = filename.lastIndexOf(".");
  return dot > 0 ? filename.slice(0, dot) : filename;
}

function report(parts, kind) {
  result.replaceChildren(...parts);
  result.className = kind;
}

async function uploadOne(file, name, replace) {
  const form = new FormData();
  if (name && !replace) form.append("name", name);
  form.append("file", file);
  progress.hidden = false;
  bar.value = 0;
  progressText.textContent = `${file.name}: 0 of ${formatBytes(file.size)}`;
  const method = replace ? "PUT" : "POST";
  const path = replace ? `/stores/${encodeURIComponent(name)}` : "/stores";
  const answer = await sendFile(method, path, form, (sent, total) => {
    bar.value = sent / total;
    progressText.textContent = `${file.name}: ${formatBytes(sent)} of ${formatBytes(total)}`;
  });
  progress.hidden = true;
  if (answer.status === 200 || answer.status === 201) {
    const info = JSON.parse(answer.text);
    const verb = answer.status === 200 ? "Replaced" : "Stored";
    report(
      [
        `${verb} `,
        element("a", { href: `${root}/ui/stores/${info.name}` }, info.name),
        `: ${formatCount(info.num_keys)} keys, ${formatBytes(info.size)}.`,
      ],
      "info",
    );
    return true;
  }
  const problem = problemOf(answer.status, answer.text);
  const parts = [`${file.name} was not stored: ${problem.detail} (${problem.code})`];
  if (problem.code === "store_exists") {
    const again = element("button", { type: "button", class: "danger small" }, "Replace it");
    again.addEventListener("click", async () => {
      if (await uploadOne(file, name || stem(file.name), true)) await load();
    });
    parts.push(" ", again);
  }
  report(parts, "error");
  return false;
}

async function uploadAll(files) {
  const name = files.length === 1 ? nameInput.value.trim() : "";
  for (const file of files) {
    try {
      if (!(await uploadOne(file, name, false))) break;
    } catch (error) {
      progress.hidden = true;
      report([`${file.name} was not stored: ${errorText(error)}`], "error");
      break;
    }
  }
  picker.value = "";
  await load().catch((error) => showMessage(errorText(error)));
}

picker.addEventListener("change", () => uploadAll([...picker.files]));
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const files = [...event.dataTransfer.files];
  if (files.length) uploadAll(files);
});

load().catch((error) => showMessage(`Could not list the stores: ${errorText(error)}`));
