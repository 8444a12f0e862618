// Drives the ComfyUI frontend in headless Chromium: loads each UI workflow by a simulated file drop
// and through the template route, reports missing node types and graphToPrompt() output, and takes a
// screenshot. Usage:
//   node check_workflows.js <server url> <workflows dir> <out.json> [screenshot.png] [train.json]
// train.json ({stem, prompt, node, minStep, shot, finalShot}): load that UI workflow, set its widgets to the
// API prompt's values, queue it from the page, and screenshot while node `node` is past step `minStep` and
// the page has received its live previews, then again when the prompt has finished.
const path = require("path");
const fs = require("fs");
const pw = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

(async () => {
  const [url, dir, out, shot, train] = process.argv.slice(2);
  const browser = await pw.chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 2000, height: 1500 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 60000 });
  await page.waitForTimeout(1500);
  const result = { drop: {}, template: {}, errors };
  const stems = fs.readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)).sort();
  for (const stem of stems) {
    const text = fs.readFileSync(path.join(dir, stem + ".json"), "utf8");
    await page.evaluate(() => window.app.graph.clear());
    await page.evaluate(async ({ text, name }) => {
      const dt = new DataTransfer();
      dt.items.add(new File([text], name, { type: "application/json" }));
      const target = document.querySelector("canvas#graph-canvas") || document.body;
      target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, { text, name: stem + ".json" });
    await page.waitForFunction((n) => window.app.graph._nodes.length === n, JSON.parse(text).nodes.length,
                               { timeout: 15000 }).catch(() => {});
    result.drop[stem] = await page.evaluate(async () => {
      const types = window.app.graph._nodes.map((n) => n.type);
      const missing = types.filter((t) => !window.LiteGraph.registered_node_types[t]);
      const p = await window.app.graphToPrompt();
      return { count: types.length, missing, output: p.output };
    });
    if (stem === "videomage_full_pipeline" && shot) {
      await page.evaluate(() => { window.app.canvas.ds.scale = 0.72; window.app.canvas.ds.offset = [10, 250];
                                  window.app.graph.setDirtyCanvas(true, true); });
      await page.waitForTimeout(800);
      await page.screenshot({ path: shot });
    }
    // the template browser's route: /api/workflow_templates/<pack>/<file>
    const tpl = await page.evaluate(async (stem) => {
      const r = await fetch(`/api/workflow_templates/videomage/${stem}.json`);
      if (!r.ok) return { status: r.status };
      const json = await r.json();
      await window.app.loadGraphData(json);
      const types = window.app.graph._nodes.map((n) => n.type);
      const p = await window.app.graphToPrompt();
      return { status: r.status, count: types.length,
               missing: types.filter((t) => !window.LiteGraph.registered_node_types[t]), output: p.output };
    }, stem);
    result.template[stem] = tpl;
  }
  if (train) result.train = await runTraining(page, dir, JSON.parse(fs.readFileSync(train, "utf8")));
  result.missingDialog = await page.evaluate(() => document.body.innerText.includes("missing") &&
                                                   document.body.innerText.toLowerCase().includes("node types"));
  fs.writeFileSync(out, JSON.stringify(result));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });

async function runTraining(page, dir, spec) {
  const ui = JSON.parse(fs.readFileSync(path.join(dir, spec.stem + ".json"), "utf8"));
  const output = await page.evaluate(async ({ ui, spec }) => {
    await window.app.loadGraphData(ui);
    for (const [id, node] of Object.entries(spec.prompt)) {
      const n = window.app.graph.getNodeById(Number(id));
      for (const [name, value] of Object.entries(node.inputs)) {
        const w = Array.isArray(value) ? null : (n.widgets || []).find((w) => w.name === name);
        if (w) w.value = value;
      }
    }
    // Count the live previews (binary "b_preview" messages) that arrive while the node reports progress.
    const vm = (window.__vm = { previews: 0, previewsWhileRunning: 0, progress: null, ran: false, done: null,
                                executed: null });
    const api = window.app.api;
    api.addEventListener("progress", (e) => {
      vm.progress = e.detail;
      vm.ran ||= String(e.detail.node) === spec.node;
    });
    api.addEventListener("b_preview", () => {
      vm.previews++;
      if (vm.ran && !vm.executed) vm.previewsWhileRunning++;
    });
    api.addEventListener("executed", (e) => {
      if (String(e.detail.node) === spec.node) vm.executed = e.detail.output;
    });
    for (const end of ["execution_success", "execution_error", "execution_interrupted"])
      api.addEventListener(end, (e) => { vm.done = { type: end, detail: e.detail }; });
    window.app.canvas.ds.scale = 1; window.app.canvas.ds.offset = [40, 260];
    window.app.graph.setDirtyCanvas(true, true);
    return (await window.app.graphToPrompt()).output;
  }, { ui, spec });
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const live = await page.waitForFunction((spec) => {
    const vm = window.__vm;
    const p = vm.progress;
    const past = p && String(p.node) === spec.node && p.value >= spec.minStep;
    return vm.done || (past && vm.previewsWhileRunning > 0);
  }, spec, { timeout: 180000 }).then(() => true, () => false);
  await page.waitForTimeout(400); // one animation frame or more: the canvas draws the preview
  const liveShot = live && (await page.evaluate(() => !window.__vm.done));
  if (liveShot) await page.screenshot({ path: spec.shot });
  await page.waitForFunction(() => window.__vm.done, null, { timeout: 240000 }).catch(() => {});
  await page.waitForTimeout(800);
  await page.screenshot({ path: spec.finalShot });
  return { output, liveShot, ...(await page.evaluate(() => window.__vm)) };
}
