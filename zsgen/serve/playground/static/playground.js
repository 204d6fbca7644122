// The prompt playground's page script. Every value from the server or the user is put into the page with
// textContent (never innerHTML), so item titles, answers and templates show as text, never as markup.
// The API token lives in sessionStorage and travels only in the Authorization header.
"use strict";

(function () {
  const API = document.body.dataset.api;
  const TOKEN_KEY = "zsgen-playground-token";
  const $ = (id) => document.getElementById(id);
  let seq = 0;
  let lastFirstStage = [];

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function status(text, state) {
    const node = $("status");
    node.textContent = text;
    node.dataset.state = state;
    if (state !== "busy") node.dataset.seq = String(++seq);
  }

  async function api(path, body) {
    const headers = { "Accept": "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    const init = { method: body === undefined ? "GET" : "POST", headers: headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      let message = "HTTP " + response.status;
      if (data && typeof data.detail === "string") message = data.detail;
      else if (data && Array.isArray(data.detail)) message = data.detail.map((d) => d.msg).join("; ");
      else if (data && data.error && typeof data.error.message === "string") message = data.error.message;
      if (response.status === 401 || response.status === 403) message += " (enter the API token above)";
      const error = new Error(message);
      error.line = data && typeof data.line === "number" ? data.line : null;
      throw error;
    }
    return data;
  }

  function userSpec() {
    if ($("who-typed").checked) {
      const history = $("history").value.split("\n").map((s) => s.trim()).filter((s) => s.length > 0);
      return { history: history, profile: $("profile").value };
    }
    return { user_id: $("user-id").value.trim() };
  }

  // Select one line of the template text, so a problem's line number leads straight to it.
  function selectLine(line) {
    const area = $("template");
    const lines = area.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    const end = start + (lines[line - 1] || "").length;
    area.focus();
    area.setSelectionRange(start, end);
    const height = area.scrollHeight / Math.max(lines.length, 1);
    area.scrollTop = Math.max(0, (line - 4) * height);
  }

  function showProblems(problems) {
    const list = $("problems");
    clear(list);
    list.className = "problems";
    for (const problem of problems) {
      const located = problem.line !== null && problem.line !== undefined;
      const item = el("li", (located ? "line " + problem.line + ": " : "") + problem.message);
      if (located) {
        item.className = "located";
        item.title = "show line " + problem.line;
        item.addEventListener("click", () => selectLine(problem.line));
      }
      list.appendChild(item);
    }
  }

  function showNote(text) {
    showProblems([]);
    $("problems").className = "problems note";
    $("problems").appendChild(el("li", text));
  }

  // One conversation per call; after a run these are the calls actually sent (a chain or bootstrap sends several).
  function showMessages(calls) {
    const box = $("messages");
    clear(box);
    calls.forEach((messages, index) => {
      if (calls.length > 1) box.appendChild(el("h3", "call " + (index + 1) + " of " + calls.length, "call"));
      for (const message of messages) {
        const item = el("div", null, "message " + message.role);
        item.appendChild(el("div", message.role, "role"));
        item.appendChild(el("pre", message.content));
        box.appendChild(item);
      }
    });
  }

  function fillList(list, items, targetId, compareTo) {
    clear(list);
    const before = new Map(compareTo.map((entry, index) => [entry.id, index]));
    items.forEach((entry, index) => {
      const li = el("li", null, entry.id === targetId ? "target" : "");
      li.dataset.id = entry.id;
      li.appendChild(el("span", entry.title, "title"));
      li.appendChild(el("span", entry.id, "id"));
      if (before.has(entry.id)) {
        const moved = before.get(entry.id) - index;
        if (moved !== 0) {
          li.appendChild(el("span", (moved > 0 ? "▲" : "▼") + Math.abs(moved), moved > 0 ? "moved up" : "moved down"));
        }
      }
      list.appendChild(li);
    });
  }

  function showUser(result) {
    const user = result.user;
    let text = user.label + ": " + user.history.length + " history items";
    if (user.profile) text += ", a profile";
    if (user.target) {
      const rank = result.target_rank_first_stage;
      text += "; held-out next item: " + user.target.title + " (first stage: " +
        (rank === null ? "not retrieved" : "#" + (rank + 1)) + ")";
    }
    $("user-summary").textContent = text;
  }

  function showRender(result) {
    showMessages(result.calls && result.calls.length ? result.calls : [result.messages]);
    $("render-note").textContent = result.note || "";
    showUser(result);
    lastFirstStage = result.first_stage;
    const target = result.user.target ? result.user.target.id : null;
    fillList($("first-stage"), result.first_stage, target, []);
  }

  function showRun(result) {
    showRender(result);
    const target = result.user.target ? result.user.target.id : null;
    fillList($("reranked"), result.reranked, target, lastFirstStage);
    $("parse-status").textContent = result.parse_status;
    $("fallback").textContent = result.fallback ? "yes: " + (result.fallback_reason || "") : "no";
    $("model").textContent = result.model || "–";
    $("raw").textContent = result.raw_text === null ? "(no answer)" : result.raw_text;
    const repairs = $("repairs");
    clear(repairs);
    for (const repair of result.repairs) repairs.appendChild(el("li", repair));
    if (result.repairs.length === 0) repairs.appendChild(el("li", "none", "muted"));
    $("calls").textContent = result.calls.length + " call(s)";
    if (target) {
      const rank = result.target_rank_reranked;
      $("user-summary").textContent += "; reranked: " + (rank === null ? "not retrieved" : "#" + (rank + 1));
    }
  }

  function fmt(x) {
    return Number.isFinite(x) ? x.toFixed(3) : "n/a";
  }

  function showTry(result) {
    const d = result.difference;
    $("try-summary").textContent =
      result.n + " users, " + result.candidates + " candidates each: NDCG@" + result.k + " first stage " +
      fmt(result.first_stage.mean) + ", reranked " + fmt(result.reranked.mean) + "; difference " + fmt(d.mean) +
      " [" + fmt(d.low) + ", " + fmt(d.high) + "] (95% paired bootstrap, " + result.resamples + " resamples); " +
      result.fallbacks + " fallback(s)";
    const body = $("try-table").querySelector("tbody");
    clear(body);
    const rank = (r) => (r === null ? "–" : String(r + 1));
    for (const row of result.users) {
      const tr = el("tr");
      tr.appendChild(el("td", row.user_id));
      tr.appendChild(el("td", row.target.title));
      tr.appendChild(el("td", rank(row.first_stage_rank)));
      tr.appendChild(el("td", rank(row.reranked_rank)));
      tr.appendChild(el("td", row.fallback ? row.fallback_reason || "yes" : ""));
      body.appendChild(tr);
    }
  }

  async function action(name, work) {
    status(name + "…", "busy");
    try {
      await work();
      status(name + " done", "done");
    } catch (error) {
      if (error.line !== null && error.line !== undefined) {
        showProblems([{ line: error.line, message: error.message.replace(/^line \d+: /, "") }]);
      }
      status(name + " failed: " + error.message, "error");
    }
  }

  function templateBody(extra) {
    return Object.assign({ template: $("template").value }, extra || {});
  }

  function fillTemplates(names, selected) {
    const select = $("template-select");
    clear(select);
    for (const name of names) {
      const option = el("option", name);
      option.value = name;
      select.appendChild(option);
    }
    select.value = selected;
  }

  async function loadTemplate(name) {
    const found = await api("/templates/" + encodeURIComponent(name));
    $("template").value = found.source;
    showProblems([]);
  }

  async function loadInfo() {
    const info = await api("/info");
    $("info").textContent = info.can_run
      ? "method " + info.method + " on backend " + info.backend + (info.model ? " (" + info.model + ")" : "")
      : "no LLM configured: render and check only";
    fillTemplates(info.templates, info.start_template);
    $("try-n").max = String(info.max_try_users);
    $("try-n").value = String(info.default_try_users);
    for (const id of ["btn-run", "btn-try"]) $(id).disabled = !info.can_run;
    if (info.can_run && !info.has_users) {
      // "try" compares orders on held-out events of the interaction log: a catalog without one has none.
      $("btn-try").disabled = true;
      $("btn-try").title = "needs a dataset with an interaction log (held-out events); this catalog has none";
      $("try-summary").textContent = "try on users: not available, " + $("btn-try").title;
    }
    if (!info.has_users) {
      $("who-typed").checked = true;
      $("who-dataset").disabled = true;
    }
    await refreshUsers();
    if (!$("template").value) await loadTemplate(info.start_template);
  }

  // The first call: without a token the service may refuse it, and the header says so where it is seen first.
  async function start() {
    try {
      await loadInfo();
    } catch (error) {
      $("info").textContent = "not loaded";
      throw error;
    }
  }

  async function refreshUsers() {
    const ids = await api("/users?limit=50&prefix=" + encodeURIComponent($("user-id").value.trim()));
    const list = $("user-ids");
    clear(list);
    for (const id of ids) {
      const option = el("option");
      option.value = id;
      list.appendChild(option);
    }
    if (!$("user-id").value && ids.length > 0) $("user-id").value = ids[0];
  }

  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    action("load", start);
  });
  $("user-id").addEventListener("input", () => refreshUsers().catch(() => {}));
  $("btn-load").addEventListener("click", () => action("load", () => loadTemplate($("template-select").value)));
  $("btn-render").addEventListener("click", () =>
    action("render", async () => showRender(await api("/render", templateBody({ user: userSpec() })))));
  $("btn-run").addEventListener("click", () =>
    action("run", async () => showRun(await api("/run", templateBody({ user: userSpec() })))));
  $("btn-check").addEventListener("click", () =>
    action("check", async () => {
      const result = await api("/check", templateBody());
      showProblems(result.problems);
      if (result.ok) showNote("no problems found");
    }));
  $("btn-try").addEventListener("click", () =>
    action("try", async () => showTry(await api("/try", templateBody({ n: Number($("try-n").value) })))));
  $("btn-save").addEventListener("click", () =>
    action("save", async () => {
      const saved = await api("/save", templateBody({ name: $("save-name").value.trim(),
                                                       overwrite: $("save-overwrite").checked }));
      showNote((saved.overwritten ? "replaced " : "saved ") + saved.name);
      // List the saved template at once (no reload): the service's list now holds it.
      const info = await api("/info");
      const name = saved.name.replace(/\.jinja$/, "");
      const keep = $("template-select").value;
      fillTemplates(info.templates, info.templates.includes(name) ? name : keep);
    }));
  action("load", start);
})();
