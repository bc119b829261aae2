// One array's page: statistics, a line plot and a histogram (uPlot), its values as
// text where bytes hold UTF-8, and a ragged tskit column (X with X_offset) row by row.
//
// Arrays up to the page's threshold are downloaded and drawn point by point; longer
// ones are drawn from the server's summary (min/max per bucket), never downloaded.
import {
  api,
  arraySnippets,
  element,
  errorText,
  formatBytes,
  formatCount,
  formatValue,
  getJson,
  maxJsonBytes,
  problemOf,
  ApiError,
  quoteKey,
  root,
  showMessage,
  snippetBlocks,
  threshold,
} from "./ui.js";

const store = document.body.dataset.store;
const key = document.body.dataset.key;
const arrayPath = `/stores/${store}/arrays/${quoteKey(key)}`;
const summaryPath = `/stores/${store}/summary/${quoteKey(key)}`;
const BUCKETS = 1000;
const BINS = 100;
const ROWS_PER_PAGE = 100;
const TEXT_PREVIEW_BYTES = 1 << 16;
const COLOR = "rgb(31, 119, 180)";
// uPlot is a deferred script that runs after this module: wait for it before drawing.
const plotting = window.uPlot
  ? Promise.resolve()
  : new Promise((resolve) =>
      document.getElementById("uplot").addEventListener("load", resolve, { once: true }),
    );
const FILL = "rgba(31, 119, 180, 0.35)";

const TYPED = {
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int64: BigInt64Array,
  uint64: BigUint64Array,
  float32: Float32Array,
  float64: Float64Array,
};

/** The raw bytes of elements [start, stop) (all by default) as a typed array. */
async function fetchValues(dtype, start, stop) {
  const query = start === undefined ? "" : `?start=${start}&stop=${stop}`;
  const response = await api(arrayPath + query);
  if (!response.ok) throw new ApiError(problemOf(response.status, await response.text()));
  return new TYPED[dtype](await response.arrayBuffer());
}

/** Elements of the array at path, or null when there is none (HEAD: no body sent). */
async function lengthOf(path) {
  const response = await api(path, { method: "HEAD" });
  return response.ok ? Number(response.headers.get("x-kastore-total-length")) : null;
}

// --- statistics and facts ---------------------------------------------------------------

function showFacts(summary) {
  const itemsize = TYPED[summary.dtype].BYTES_PER_ELEMENT;
  const size = summary.total_length * itemsize;
  const facts = [
    ["dtype", summary.dtype],
    ["length", formatCount(summary.total_length)],
    ["size", `${formatBytes(size)} (${formatCount(size)} bytes)`],
  ];
  document
    .getElementById("facts")
    .replaceChildren(...facts.flatMap(([term, value]) => [element("dt", {}, term), element("dd", {}, value)]));
  const url = root + arrayPath;
  const links = [
    element("a", { href: url, download: "", class: "api" }, "raw bytes"),
    " · ",
    element("a", { href: `${url}?format=npy`, download: "", class: "api" }, "npy"),
  ];
  if (size <= maxJsonBytes) {
    links.push(" · ", element("a", { href: `${url}?format=json`, class: "api" }, "JSON"));
    links.push(" · ", element("a", { href: `${url}?format=csv`, download: "", class: "api" }, "CSV"));
  }
  links.push(" · ", element("a", { href: `${root}${summaryPath}`, class: "api" }, "summary (JSON)"));
  document.getElementById("downloads").replaceChildren(...links);
  document
    .getElementById("snippets")
    .replaceChildren(...snippetBlocks(arraySnippets(store, key, summary.dtype)));
}

function showStats(summary) {
  const cells = {
    "stat-min": formatValue(summary.min),
    "stat-max": formatValue(summary.max),
    "stat-mean": formatValue(summary.mean),
    "stat-nan": formatCount(summary.nan_count),
    "stat-inf": formatCount(summary.inf_count),
  };
  for (const [id, text] of Object.entries(cells)) {
    const cell = document.getElementById(id);
    cell.textContent = text;
    const exact = { "stat-min": summary.min, "stat-max": summary.max, "stat-mean": summary.mean }[id];
    if (exact !== undefined && exact !== null) cell.dataset.value = String(exact);
  }
}

// --- plots ------------------------------------------------------------------------------

function plotWidth(box) {
  return Math.max(320, box.clientWidth || 800);
}

function markDrawn(kind) {
  return (plot) => {
    if (plot.root.dataset.drawn) return;
    plot.root.dataset.drawn = "true";
    document.body.dataset[kind] = String(performance.now());
  };
}

/** Non-finite values as null, which uPlot leaves out; finite arrays go as they are. */
function plottable(values, clean) {
  if (values instanceof BigInt64Array || values instanceof BigUint64Array) {
    return Float64Array.from(values, Number);
  }
  if (clean) return values;
  return Array.from(values, (value) => (Number.isFinite(value) ? value : null));
}

function linePlot(summary, values) {
  const box = document.getElementById("plot");
  const note = document.getElementById("plot-note");
  let data;
  let series;
  let bands;
  if (values) {
    const xs = new Float64Array(values.length);
    for (let i = 0; i < xs.length; i += 1) xs[i] = i;
    data = [xs, plottable(values, summary.finite_count === summary.length)];
    series = [{ label: "element" }, { label: key, stroke: COLOR, width: 1 }];
    note.textContent = `Every one of the ${formatCount(values.length)} elements.`;
  } else {
    const { starts, min, max } = summary.buckets;
    data = [starts, min, max];
    series = [
      { label: "element" },
      { label: "min", stroke: COLOR, width: 1 },
      { label: "max", stroke: COLOR, width: 1 },
    ];
    bands = [{ series: [2, 1], fill: FILL }];
    const run = Math.ceil(summary.length / Math.max(1, starts.length));
    note.textContent =
      `${formatCount(summary.length)} elements, drawn as the least and greatest value of ` +
      `each of ${formatCount(starts.length)} runs of about ${formatCount(run)} (computed by the server).`;
  }
  if (data[0].length === 0) {
    note.textContent = "The array is empty.";
    document.body.dataset.plotted = "0";
    return;
  }
  const options = {
    width: plotWidth(box),
    height: 320,
    scales: { x: { time: false } },
    axes: [{}, { size: 80 }],
    series,
    bands,
    hooks: { draw: [markDrawn("plotted")] },
  };
  new uPlot(options, data, box);
}

function histogram(summary) {
  const box = document.getElementById("histogram");
  const { edges, counts } = summary.histogram;
  if (counts.length === 0) {
    box.textContent = "No finite values.";
    document.body.dataset.histogram = "0";
    return;
  }
  const integer = /int/.test(summary.dtype);
  const unit = integer && edges.length > 1 && edges[1] - edges[0] === 1;
  const xs = counts.map((_, i) => (unit ? edges[i] : (edges[i] + edges[i + 1]) / 2));
  const options = {
    width: plotWidth(box),
    height: 240,
    scales: { x: { time: false, range: (u, low, high) => [low - 0.5 * (edges[1] - edges[0]), high + 0.5 * (edges[1] - edges[0])] } },
    axes: [{}, { size: 80 }],
    series: [
      { label: unit ? "value" : "bin centre" },
      {
        label: "count",
        stroke: COLOR,
        fill: FILL,
        paths: uPlot.paths.bars({ size: [0.9, Infinity] }),
        points: { show: false },
      },
    ],
    hooks: { draw: [markDrawn("histogram")] },
  };
  new uPlot(options, [xs, counts], box);
}

// --- values as text, and ragged columns row by row --------------------------------------

/**
 * The bytes as text, if they are UTF-8 without control characters (but tab and newlines).
 * A cut-off start of an array (partial) may end inside a character.
 */
function asText(values, partial = false) {
  if (!(values instanceof Uint8Array || values instanceof Int8Array)) return null;
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes, { stream: partial });
    return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? null : text;
  } catch {
    return null;
  }
}

/** JSON pretty-printed; other text as it is. */
function pretty(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      return JSON.stringify(JSON.parse(trimmed), null, 2);
    } catch {
      // not JSON after all
    }
  }
  return text;
}

function showText(text, note) {
  document.getElementById("text-section").hidden = false;
  document.getElementById("text-title").textContent = `Values as text${note}`;
  document.getElementById("text").replaceChildren(element("pre", { class: "text" }, pretty(text)));
}

async function showRows(summary, offsetsPath, total) {
  const section = document.getElementById("text-section");
  const box = document.getElementById("text");
  const moreButton = document.getElementById("more-rows");
  const table = element("table", { class: "list rows" }, element("thead", {}, element("tr", {}, element("th", { class: "num" }, "row"), element("th", {}, "value"))));
  const tbody = element("tbody");
  table.append(tbody);
  section.hidden = false;
  document.getElementById("text-title").textContent =
    `Rows: ${formatCount(Math.max(total, 0))}, split by ${key}_offset`;
  box.replaceChildren(table);
  let shown = 0;
  async function page() {
    const stop = Math.min(total, shown + ROWS_PER_PAGE);
    if (stop <= shown) return;
    const offsets = (await getJson(`${offsetsPath}?format=json&start=${shown}&stop=${stop + 1}`)).data;
    const first = offsets[0];
    const last = offsets[offsets.length - 1];
    if (!(first <= last) || last > summary.total_length) {
      throw new Error(`${key}_offset does not split ${key}: its offsets go past the array`);
    }
    const values = await fetchValues(summary.dtype, first, last);
    for (let row = shown; row < stop; row += 1) {
      const start = offsets[row - shown] - first;
      const end = offsets[row - shown + 1] - first;
      const cells = values.subarray(start, end);
      const text = asText(cells);
      const content =
        text !== null
          ? element("pre", { class: "text" }, pretty(text))
          : element("code", {}, `[${Array.from(cells, String).join(", ")}]`);
      tbody.append(element("tr", {}, element("td", { class: "num" }, String(row)), element("td", {}, content)));
    }
    shown = stop;
    moreButton.hidden = shown >= total;
  }
  moreButton.addEventListener("click", () => page().catch((error) => showMessage(errorText(error))));
  await page();
}

async function showValues(summary, values) {
  const offsetsPath = `/stores/${store}/arrays/${quoteKey(`${key}_offset`)}`;
  const offsets = key.endsWith("_offset") ? null : await lengthOf(offsetsPath);
  if (offsets !== null && offsets > 0) {
    await showRows(summary, offsetsPath, offsets - 1);
    return;
  }
  if (summary.dtype !== "uint8" && summary.dtype !== "int8") return;
  if (summary.total_length === 0) return;
  let bytes = values;
  let note = "";
  if (!bytes) {
    bytes = await fetchValues(summary.dtype, 0, TEXT_PREVIEW_BYTES);
    note = ` (the first ${formatBytes(TEXT_PREVIEW_BYTES)})`;
  }
  const text = asText(bytes, bytes.length < summary.total_length);
  if (text !== null) showText(text, note);
}

// --- the page ---------------------------------------------------------------------------

async function main() {
  // The histogram takes the server longest: it is asked for once the plot is drawn,
  // so that the two do not share the server's CPU.
  const summary = await getJson(`${summaryPath}?buckets=${BUCKETS}&bins=0`);
  showFacts(summary);
  showStats(summary);
  const values = summary.total_length <= threshold ? await fetchValues(summary.dtype) : null;
  await plotting;
  linePlot(summary, values);
  const counted = getJson(`${summaryPath}?buckets=0&bins=${BINS}`);
  await showValues(summary, values);
  histogram(await counted);
}

main().catch((error) => showMessage(`Could not show ${key}: ${errorText(error)}`));
