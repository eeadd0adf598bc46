// Live counts on a journey's graph: ask the console for fresh numbers every few seconds and
// write them into the drawn nodes. Same origin, with the session cookie; no key here.
"use strict";
(function () {
  const head = document.getElementById("journey");
  if (!head) return;
  const url = head.dataset.countsUrl;
  const every = Math.max(500, Number(head.dataset.refreshSeconds || "3") * 1000);
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };

  async function refresh() {
    try {
      const reply = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (reply.status === 401) { window.location.assign("/sign-in"); return; }
      if (!reply.ok) return;
      const data = await reply.json();
      for (const el of document.querySelectorAll("tspan.count")) {
        const node = data.nodes[el.dataset.node];
        if (node) el.textContent = String(node[el.dataset.field] ?? 0);
      }
      const state = document.getElementById("journey-state");
      if (state && state.textContent !== data.state) {
        state.textContent = data.state;
        state.className = "state state-" + data.state;
      }
      set("conv-entered", String(data.conversion.entered));
      set("conv-converted", String(data.conversion.converted));
      set("conv-rate", (data.conversion.conversion_rate * 100).toFixed(1) + "%");
      const versions = document.querySelector("#versions tbody");
      if (versions && data.versions.length) {
        versions.replaceChildren(...data.versions.map((v) => {
          const row = document.createElement("tr");
          const published = v.version === data.conversion.version ? " (published)" : "";
          for (const text of [String(v.version) + published, String(v.entered),
                              String(v.converted), (v.conversion_rate * 100).toFixed(1) + "%"]) {
            const cell = document.createElement("td");
            cell.textContent = text;
            row.appendChild(cell);
          }
          return row;
        }));
      }
      set("counts-updated", "updated " + new Date().toLocaleTimeString());
    } finally {
      window.setTimeout(refresh, every);
    }
  }
  window.setTimeout(refresh, every);
})();
