// One store's page: its facts, and its keys grouped by prefix (tskit's tables),
// each with downloads and snippets.
import {
  apiPath,
  arraySnippets,
  element,
  errorText,
  formatBytes,
  formatCount,
  getJson,
  maxJsonBytes,
  root,
  showMessage,
  snippetBlocks,
} from "./ui.js";

const store = document.body.dataset.store;
const groupsBox = document.getElementById("groups");
const filter = document.getElementById("filter");
const more = document.getElementById("more");
const PAGE = 10000;
let keys = [];
let total = 0;
let next = `/stores/${store}/keys?limit=${PAGE}`;

function fact(term, ...value) {
  return [element("dt", {}, term), element("dd", {}, ...value)];
}

async function showInfo() {
  const info = await getJson(`/stores/${store}`);
  document.getElementById("info").replaceChildren(
    ...fact("size", `${formatBytes(info.size)} (${formatCount(info.size)} bytes)`),
    ...fact("keys", formatCount(info.num_keys)),
    ...fact("created", info.created.replace("T", " ").replace("Z", " UTC")),
    ...fact("sha256", element("code", {}, info.sha256)),
    ...fact("file", element("a", { href: info.file_url, download: "", class: "api" }, "download the whole file")),
  );
}

async function loadMore() {
  more.disabled = true;
  const page = await getJson(next);
  keys.push(...page.keys);
  total = page.total;
  next = page.next ? apiPath(page.next) : null;
  more.hidden = next === null;
  more.disabled = false;
  render();
}

/** "edges/" for "edges/left"; "" for keys without a slash. */
function prefixOf(key) {
  const slash = key.indexOf("/");
  return slash < 0 ? "" : key.slice(0, slash + 1);
}

function render() {
  const wanted = filter.value.trim().toLowerCase();
  const groups = new Map();
  let shown = 0;
  for (const entry of keys) {
    if (wanted && !entry.key.toLowerCase().includes(wanted)) continue;
    const prefix = prefixOf(entry.key);
    if (!groups.has(prefix)) groups.set(prefix, []);
    groups.get(prefix).push(entry);
    shown += 1;
  }
  const ordered = [...groups.entries()].sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1));
  groupsBox.replaceChildren(...ordered.map(([prefix, entries]) => group(prefix, entries)));
  const loaded = keys.length < total ? ` (${formatCount(keys.length)} loaded)` : "";
  document.getElementById("count").textContent = wanted
    ? `${formatCount(shown)} of ${formatCount(total)} keys${loaded}`
    : `${formatCount(total)} keys${loaded}`;
}

function group(prefix, entries) {
  const bytes = entries.reduce((sum, entry) => sum + entry.size, 0);
  const rows = entries.map(keyRow);
  return element(
    "details",
    { class: "group", open: "" },
    element(
      "summary",
      {},
      element("strong", {}, prefix || "(top level)"),
      ` ${formatCount(entries.length)} keys, ${formatBytes(bytes)}`,
    ),
    element(
      "table",
      { class: "list keys" },
      element(
        "thead",
        {},
        element(
          "tr",
          {},
          element("th", {}, "Key"),
          element("th", {}, "dtype"),
          element("th", { class: "num" }, "Length"),
          element("th", { class: "num" }, "Size"),
          element("th", {}, "Download"),
        ),
      ),
      element("tbody", {}, ...rows.flat()),
    ),
  );
}

function keyRow(entry) {
  const page = `${root}/ui/stores/${store}/arrays/${entry.url.split("/arrays/")[1]}`;
  // JSON and CSV are refused past KASTORE_MAX_JSON_BYTES: no link then.
  const textLinks =
    entry.size <= maxJsonBytes
      ? [
          element("a", { href: `${entry.url}?format=json`, class: "api" }, "JSON"),
          " ",
          element("a", { href: `${entry.url}?format=csv`, download: "", class: "api" }, "CSV"),
        ]
      : [element("span", { class: "hint", title: "larger than KASTORE_MAX_JSON_BYTES" }, "JSON, CSV: too large")];
  const toggle = element("button", { type: "button", class: "link" }, "snippets");
  const snippetRow = element("tr", { class: "snippets", hidden: "" });
  toggle.addEventListener("click", () => {
    if (!snippetRow.firstChild) {
      snippetRow.append(
        element("td", { colspan: "5" }, ...snippetBlocks(arraySnippets(store, entry.key, entry.dtype))),
      );
    }
    snippetRow.hidden = !snippetRow.hidden;
  });
  const mainRow = element(
    "tr",
    { "data-key": entry.key },
    element("td", {}, element("a", { href: page }, entry.key)),
    element("td", {}, entry.dtype),
    element("td", { class: "num" }, formatCount(entry.length)),
    element("td", { class: "num", title: `${formatCount(entry.size)} bytes` }, formatBytes(entry.size)),
    element(
      "td",
      { class: "actions" },
      element("a", { href: entry.url, download: "", class: "api" }, "raw"),
      " ",
      element("a", { href: `${entry.url}?format=npy`, download: "", class: "api" }, "npy"),
      " ",
      ...textLinks,
      " ",
      toggle,
    ),
  );
  return [mainRow, snippetRow];
}

filter.addEventListener("input", render);
more.addEventListener("click", () => loadMore().catch((error) => showMessage(errorText(error))));

Promise.all([showInfo(), loadMore()]).catch((error) =>
  showMessage(`Could not read the store ${store}: ${errorText(error)}`),
);
