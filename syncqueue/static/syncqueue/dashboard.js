// The failure dashboard refreshes itself: every 10 s (while the tab is visible) it fetches the
// same page and swaps in the new content. Without JavaScript, reloading does the same.
(() => {
  "use strict";
  const EVERY_MS = 10000;
  const stamp = () => {
    const note = document.getElementById("refreshed");
    if (note) note.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every 10 s.`;
  };
  const refresh = async () => {
    if (document.hidden) return;
    try {
      const answer = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      });
      if (!answer.ok || answer.redirected) return; // signed out or an error: keep what is shown
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.getElementById("content-main");
      const current = document.getElementById("content-main");
      if (!fresh || !current) return;
      if (current.contains(document.activeElement) && document.activeElement !== document.body) {
        return; // someone is using a control: do not pull it away from under them
      }
      current.replaceWith(fresh);
      stamp();
    } catch (error) {
      // the server is restarting or the network dropped: try again next time
    }
  };
  stamp();
  window.setInterval(refresh, EVERY_MS);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
})();
