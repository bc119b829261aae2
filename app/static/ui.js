// What every page of the web UI shares: the API (with the tab's key), dialogs,
// formatting and snippets. Plain modules, no build step.

const body = document.body;
export const root = body.dataset.root;
export const maxJsonBytes = Number(body.dataset.maxJsonBytes);
export const threshold = Number(body.dataset.threshold);
const KEY_ITEM = "kastore-service.api-key";

// --- the API key, kept for the tab ------------------------------------------------

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

function showKeyState() {
  document.getElementById("key-state").hidden = !apiKey();
}

document.getElementById("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_ITEM);
  showKeyState();
});
showKeyState();

let asking = null;

/**
 * Ask for a key in a dialog; resolves true when one was given (and kept).
 * Requests refused at the same time share the one dialog.
 */
export function askForKey(reason) {
  if (!asking) asking = prompt(reason).finally(() => (asking = null));
  return asking;
}

function prompt(reason) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = reason;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = input.value.trim();
        if (dialog.returnValue === "use" && key) {
          sessionStorage.setItem(KEY_ITEM, key);
          showKeyState();
          resolve(true);
        } else {
          resolve(false);
        }
      },
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// Errors a key can cure: none sent, a wrong one, or one without the scope needed.
const KEY_ERRORS = new Set(["missing_api_key", "invalid_api_key", "insufficient_scope"]);

/** The API's error body ({error, detail}) of a failed answer, or a stand-in. */
export function problemOf(status, text) {
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed.detail === "string") {
      return { status, code: parsed.error, detail: parsed.detail };
    }
  } catch {
    // not JSON: a proxy's page, say
  }
  return { status, code: `http_${status}`, detail: `the server answered ${status}` };
}

export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail);
    this.status = problem.status;
    this.code = problem.code;
  }
}

/** fetch() of an API path (without the root path), with the tab's key; asks for one on 401. */
export async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = apiKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(root + path, { ...init, headers });
    if (response.status === 401 || response.status === 403) {
      const problem = problemOf(response.status, await response.clone().text());
      if (KEY_ERRORS.has(problem.code) && (await askForKey(problem.detail))) continue;
    }
    return response;
  }
}

/** The JSON answer of a GET, or an ApiError carrying the API's message. */
export async function getJson(path) {
  const response = await api(path);
  const text = await response.text();
  if (!response.ok) throw new ApiError(problemOf(response.status, text));
  return JSON.parse(text);
}

/** A path of the API as given by the API itself (which includes the root path). */
export function apiPath(url) {
  return url.startsWith(root) ? url.slice(root.length) : url;
}

/**
 * Send a file with XMLHttpRequest (fetch cannot report upload progress).
 * Resolves to {status, text}; asks for a key on 401 and sends again.
 */
export async function sendFile(method, path, form, onProgress) {
  for (;;) {
    const answer = await new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open(method, root + path);
      const key = apiKey();
      if (key) request.setRequestHeader("Authorization", `Bearer ${key}`);
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded, event.total);
      });
      request.addEventListener("load", () =>
        resolve({ status: request.status, text: request.responseText }),
      );
      request.addEventListener("error", () =>
        reject(new Error("the connection to the server failed")),
      );
      request.send(form);
    });
    if (answer.status === 401 || answer.status === 403) {
      const problem = problemOf(answer.status, answer.text);
      if (KEY_ERRORS.has(problem.code) && (await askForKey(problem.detail))) continue;
    }
    return answer;
  }
}

// --- links to the API ----------------------------------------------------------------------

/** The file name an answer's Content-Disposition gives, or a stand-in. */
function fileName(response, fallback) {
  const disposition = response.headers.get("content-disposition") || "";
  const encoded = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  if (encoded) return decodeURIComponent(encoded[1]);
  const plain = /filename="([^"]+)"/i.exec(disposition);
  return plain ? plain[1] : fallback;
}

// A plain link goes without the tab's key: while one is kept, links to the API
// (class "api") are fetched with it and saved from memory instead.
document.addEventListener("click", async (event) => {
  const link = event.target.closest("a.api");
  if (!link || !apiKey() || event.button !== 0 || event.ctrlKey || event.metaKey) return;
  event.preventDefault();
  const url = new URL(link.href);
  try {
    const response = await api(apiPath(url.pathname + url.search));
    if (!response.ok) throw new ApiError(problemOf(response.status, await response.text()));
    const saved = URL.createObjectURL(await response.blob());
    const last = decodeURIComponent(url.pathname.split("/").pop());
    const save = element("a", { href: saved, download: fileName(response, last) });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(saved), 60_000);
  } catch (error) {
    showMessage(`Could not download ${url.pathname}: ${errorText(error)}`);
  }
});

// --- dialogs and messages ---------------------------------------------------------------

/** Ask to confirm in a dialog; resolves true on yes. */
export function confirmAction(text, yes) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), {
      once: true,
    });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

/** Show a message at the top of the page; kind is "error" or "info". */
export function showMessage(text, kind = "error") {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = `message ${kind}`;
  message.hidden = !text;
}

export function errorText(error) {
  return error instanceof ApiError ? `${error.message} (${error.code})` : String(error.message);
}

// --- formatting -------------------------------------------------------------------------

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes) {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

export function formatCount(count) {
  return Number(count).toLocaleString("en-US");
}

/** A number as the statistics show it: integers whole, floats to 6 significant digits. */
export function formatValue(value) {
  if (value === null || value === undefined) return "–";
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return formatCount(value);
  return Number(value).toPrecision(6).replace(/\.?0+(e|$)/, "$1");
}

/** An element, created with its attributes and children (strings become text). */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** The percent-encoded path segment of a key, as the API's listings give it. */
export function quoteKey(key) {
  const encoded = encodeURIComponent(key).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return encoded === "." || encoded === ".." ? encoded.replaceAll(".", "%2E") : encoded;
}

// --- snippets -----------------------------------------------------------------------------

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function pythonName(key) {
  const name = key.split("/").pop().replace(/\W+/g, "_").replace(/^(\d)/, "_$1");
  return name && name !== "_" ? name : "values";
}

/** curl and Python snippets that download one array, as {title, text} pairs. */
export function arraySnippets(store, key, dtype) {
  const base = `${location.origin}${root}`;
  const url = `${base}/stores/${store}/arrays/${quoteKey(key)}`;
  const file = `${key.replaceAll("/", "_")}.${dtype}.bin`;
  const name = pythonName(key);
  const keyed = apiKey() !== null;
  const curlAuth = keyed ? ' -H "Authorization: Bearer $KASTORE_API_KEY"' : "";
  const pyHeaders = keyed
    ? ', headers={"Authorization": "Bearer " + os.environ["KASTORE_API_KEY"]}'
    : "";
  return [
    {
      title: "curl",
      text: `curl${curlAuth} -o ${shellQuote(file)} ${shellQuote(url)}`,
    },
    {
      title: "Python (numpy)",
      text: [
        keyed ? "import os\n" : "",
        "import urllib.request\n\nimport numpy as np\n\n",
        `request = urllib.request.Request(${JSON.stringify(url)}${pyHeaders})\n`,
        "with urllib.request.urlopen(request) as answer:\n",
        `    ${name} = np.frombuffer(answer.read(), dtype=${JSON.stringify(dtype)})`,
      ].join(""),
    },
    {
      title: "Python (kastore.remote)",
      text: [
        "import numpy as np\nimport kastore.remote\n\n",
        keyed ? "# the key is read from KASTORE_API_KEY\n" : "",
        `store = kastore.remote.connect(${JSON.stringify(base)})[${JSON.stringify(store)}]\n`,
        `${name} = np.asarray(store[${JSON.stringify(key)}])`,
      ].join(""),
    },
  ];
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "copied";
  } catch {
    button.textContent = "select and copy";
  }
  setTimeout(() => {
    button.textContent = "copy";
  }, 1500);
}

/** The snippets as blocks, each with a copy button. */
export function snippetBlocks(snippets) {
  return snippets.map(({ title, text }) => {
    const button = element("button", { type: "button", class: "copy" }, "copy");
    button.addEventListener("click", () => copy(text, button));
    return element(
      "div",
      { class: "snippet" },
      element("div", { class: "snippet-title" }, title, " ", button),
      element("pre", {}, element("code", {}, text)),
    );
  });
}
