// RCIoTs status page: live updates without reloading, and filters that apply as you type.
// The server renders every page; this script only fetches the page's live region again (as
// an HTML fragment the server escaped) when the event stream says something changed.
"use strict";
(function () {
  const live = document.getElementById("live");
  const indicator = document.getElementById("live-state");
  const form = document.getElementById("filters");
  if (!live) {
    return;
  }
  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const answer = await fetch(location.pathname + location.search, {
        headers: { "X-Rciots-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (answer.status === 401) {
        location.reload(); // logged out meanwhile: the server sends the login page
        return;
      }
      if (answer.ok || answer.status === 404) {
        live.innerHTML = await answer.text();
        document.dispatchEvent(new CustomEvent("rciots:refreshed"));
      }
    } catch (error) {
      // the controller restarts or the network blips: the event stream reconnects and asks again
    } finally {
      busy = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  function show(state, text) {
    if (indicator) {
      indicator.className = "live " + state;
      indicator.textContent = text;
    }
  }

  const since = live.dataset.generation || "";
  const events = new EventSource("/api/v1/events?since=" + encodeURIComponent(since));
  events.addEventListener("open", function () { show("on", "live"); });
  events.addEventListener("error", function () { show("lost", "reconnecting"); });
  events.addEventListener("changed", function () { refresh(); });

  // Filters: the address says what is shown (so it can be bookmarked and shared).
  function fromForm() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (String(value).trim() !== "") {
        params.set(name, String(value));
      }
    }
    const text = params.toString();
    return location.pathname + (text ? "?" + text : "");
  }

  function toForm() {
    if (!form) {
      return;
    }
    const params = new URLSearchParams(location.search);
    for (const element of form.elements) {
      if (element.name && element.name !== "") {
        element.value = params.get(element.name) || "";
      }
    }
  }

  function go(url, push) {
    if (push) {
      history.pushState(null, "", url);
    } else {
      history.replaceState(null, "", url);
    }
    refresh();
  }

  if (form) {
    let timer = null;
    form.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { go(fromForm(), false); }, 200);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      go(fromForm(), true);
    });
  }

  // Links that only change the overview's filters or page: no reload.
  document.addEventListener("click", function (event) {
    const link = event.target.closest("a[data-nav]");
    if (!link || !form || event.ctrlKey || event.metaKey || event.shiftKey) {
      return;
    }
    const url = new URL(link.href, location.href);
    if (url.origin !== location.origin || url.pathname !== location.pathname) {
      return;
    }
    event.preventDefault();
    history.pushState(null, "", url.pathname + url.search);
    toForm();
    refresh();
  });
  window.addEventListener("popstate", function () {
    toForm();
    refresh();
  });
})();
