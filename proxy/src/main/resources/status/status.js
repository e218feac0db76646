// The status page: fills the tables from /status.json every two seconds. Plain DOM calls and
// textContent only (nothing the server sends is parsed as HTML).
"use strict";
(function () {
  const REFRESH_MS = 2000;

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600),
        m = Math.floor(seconds % 3600 / 60), s = Math.floor(seconds % 60);
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + s + "s";
    return s + "s";
  }

  function ago(iso, now) {
    if (!iso) return "never";
    return duration(Math.max(0, (Date.parse(now) - Date.parse(iso)) / 1000)) + " ago";
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function bar(value, max) {
    const outer = el("div", null, "bar");
    const inner = el("div");
    const fraction = max > 0 ? Math.min(1, value / max) : 0;
    inner.style.width = (fraction * 100).toFixed(1) + "%";
    if (fraction > 0.9) inner.className = "high";
    outer.setAttribute("role", "progressbar");
    outer.setAttribute("aria-valuemin", "0");
    outer.setAttribute("aria-valuenow", String(value));
    if (max > 0) outer.setAttribute("aria-valuemax", String(max));
    outer.appendChild(inner);
    return outer;
  }

  function fill(tableId, rows, empty, columns) {
    const body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = el("tr");
      const td = el("td", empty, "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(cells => {
      const tr = el("tr");
      cells.forEach(c => tr.appendChild(c));
      body.appendChild(tr);
    });
  }

  function cell(content, cls) {
    const td = el("td", null, cls);
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    return td;
  }

  function render(s) {
    document.getElementById("version").textContent = s.version;
    document.getElementById("summary").textContent = "Up " + duration(s.uptimeSeconds) + ", since " +
        new Date(s.started).toLocaleString() + ".";
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString() +
        "; refreshes every " + REFRESH_MS / 1000 + " s.";

    const c = s.cache;
    document.getElementById("hit-ratio").textContent =
        c.hitRatio === null ? "–" : (c.hitRatio * 100).toFixed(1) + " %";
    document.getElementById("hits").textContent = c.hits + " hits, " + c.misses + " misses since start";
    document.getElementById("saved").textContent = bytes(c.bytesFromCache);
    document.getElementById("from-upstream").textContent = "served from the cache; " +
        bytes(c.bytesFromUpstream) + " as they came from upstreams";

    const st = s.storage;
    document.getElementById("storage-used").textContent = bytes(st.usedBytes);
    // Against the limit when there is one, else against what the disk could hold (used + free).
    const room = st.limitBytes || (st.freeBytes === null ? 0 : st.usedBytes + st.freeBytes);
    document.getElementById("storage-bar").replaceChildren(bar(st.usedBytes, room));
    document.getElementById("storage-detail").textContent =
        (st.limitBytes ? "of " + bytes(st.limitBytes) + " limit" : "no size limit") + "; " +
        (st.freeBytes === null ? "free space not read yet" : bytes(st.freeBytes) + " free on disk") +
        "; " + st.blobs + " blobs, " + st.manifests + " manifests";

    fill("upstreams", s.upstreams.map(u => [
      cell(u.name),
      cell(el("span", u.state, "state state-" + u.state)),
      cell(ago(u.lastAnswer, s.now)),
      cell(u.lastError ? ago(u.lastError, s.now) + ": " + u.lastErrorMessage : "none"),
      cell(u.rateLimitRemaining === null ? "not reported" : String(u.rateLimitRemaining), "num"),
    ]), "no upstreams", 5);

    const cl = s.cluster;
    document.getElementById("cluster").hidden = !cl;
    if (cl) {
      document.getElementById("cluster-name").textContent = cl.name + ", " + cl.copies +
          (cl.copies === 1 ? " copy" : " copies") + " of each blob";
      const h = cl.hops;
      document.getElementById("cluster-summary").textContent = (cl.joined ? "" : "joining; alone until then. ") +
          "Between replicas: " + h.requestsOut + " requests to owners (" + bytes(h.bytesOut) + " received), " +
          h.requestsIn + " answered as owner (" + bytes(h.bytesIn) + " sent); " + cl.membershipChanges +
          " membership changes since start.";
      fill("members", cl.members.map(m => [
        cell(m.url + (m.self ? " (this one)" : "")),
        cell(el("span", m.state === "up" ? "up" : "gone " + ago(m.since, s.now),
            "state state-" + (m.state === "up" ? "up" : "unreachable"))),
      ]), "none", 2);
    }

    const ho = s.hosted;
    document.getElementById("hosted").hidden = !ho;
    if (ho) {
      document.getElementById("hosted-summary").textContent = bytes(ho.usedBytes) +
          (ho.limitBytes === null ? " (no quota)" : " of " + bytes(ho.limitBytes)) + " in " + ho.blobs + " blobs and " +
          ho.manifests + " manifests, never evicted; " + ho.uploads + " uploads open" +
          (ho.otherRepositories ? "; " + ho.otherRepositories + " more repositories you may not pull" : "") + ".";
      const hb = document.getElementById("hosted-bar");
      hb.replaceChildren();
      if (ho.limitBytes !== null) {
        hb.appendChild(bar(ho.usedBytes, ho.limitBytes));
      }
      fill("hosted-repos", ho.repositories.map(r => [cell(r.name), cell(String(r.tags), "num"),
        cell(String(r.manifests), "num")]), "nothing pushed yet", 3);
    }

    fill("downloads", s.downloads.map(d => [
      cell(el("code", d.digest.substring(0, 19) + "…")),
      cell(d.source),
      cell(bar(d.bytes, d.size || 0)),
      cell(bytes(d.bytes) + (d.size === null ? "" : " of " + bytes(d.size)), "num"),
      cell(d.bytesPerSecond === null ? "–" : bytes(d.bytesPerSecond) + "/s", "num"),
    ]), "none now", 5);

    fill("top", s.topRepositories.map(r => [cell(r.name), cell(String(r.pulls), "num")]),
        "no pulls since start", 2);

    fill("jobs", s.prefetch.map(j => [
      cell(j.image),
      cell(j.trigger),
      cell(el("span", j.state, "state state-" + j.state)),
      cell(j.state === "failed" ? j.error :
          j.blobs === null ? "resolving the tag" :
          j.blobsDone + " of " + j.blobs + " blobs, " + bytes(j.bytesDone) + " of " + bytes(j.bytes)),
    ]), "none since start", 4);
  }

  function refresh() {
    fetch("/status.json", {cache: "no-store"})
      .then(r => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(render)
      .catch(e => {
        document.getElementById("updated").textContent = "The mirror did not answer (" + e.message +
            "); trying again every " + REFRESH_MS / 1000 + " s.";
      })
      .finally(() => setTimeout(refresh, REFRESH_MS));
  }

  document.addEventListener("DOMContentLoaded", refresh);
})();
