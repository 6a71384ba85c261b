// Live updates for the settings page. Everything here is an enhancement: without JavaScript
// the page's forms do the same through ordinary POSTs and redirects.
(() => {
  "use strict";
  const csrfToken = () =>
    (document.cookie.split("; ").find((c) => c.startsWith("csrftoken=")) || "").split("=")[1] || "";

  const relative = (iso) => {
    if (!iso) return null;
    const seconds = Math.round((new Date(iso) - new Date()) / 1000);
    const abs = Math.abs(seconds);
    const [value, unit] = abs < 60 ? [abs, "second"] : abs < 3600 ? [Math.round(abs / 60), "minute"]
      : abs < 86400 ? [Math.round(abs / 3600), "hour"] : [Math.round(abs / 86400), "day"];
    if (abs < 5) return seconds <= 0 ? "just now" : "in a moment";
    const text = `${value} ${unit}${value === 1 ? "" : "s"}`;
    return seconds < 0 ? `${text} ago` : `in ${text}`;
  };

  const field = (card, name) => card.querySelector(`[data-field="${name}"]`);

  const render = (card, data) => {
    const status = field(card, "status");
    status.textContent = data.health.label;
    status.className = `status status-${data.status}`;
    const notice = field(card, "notice");
    notice.hidden = !data.health.message;
    field(card, "notice-message").textContent = data.health.message || "";
    field(card, "notice-action").textContent = data.health.action || "";
    field(card, "last-success").textContent = relative(data.last_success_at) || "not yet";
    const due = data.next_sync_at && new Date(data.next_sync_at) <= new Date();
    field(card, "next-sync").textContent = !data.enabled ? "off"
      : due ? "due — waiting for a worker" : relative(data.next_sync_at) || "not scheduled";
    const job = data.job;
    const box = field(card, "job");
    box.hidden = !job;
    if (!job) return;
    field(card, "job-label").textContent = job.state_label + (job.error ? `: ${job.error}` : "");
    const bar = field(card, "progress");
    bar.max = job.progress.total || Math.max(job.progress.done, 1);
    bar.value = job.progress.done;
    bar.textContent = `${job.progress.percent || 0}%`;
    let count = `${job.progress.done}`;
    if (job.progress.total) count += ` of ${job.progress.total}`;
    count += (job.progress.total || job.progress.done) === 1 ? " item" : " items";
    if (job.progress.per_second) count += ` · ${job.progress.per_second}/s`;
    field(card, "count").textContent = count;
  };

  const poll = async (card) => {
    try {
      const response = await fetch(card.dataset.api, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      render(card, data);
      if (data.job && data.job.active) {
        setTimeout(() => poll(card), 1000);
        return;
      }
    } catch (error) {
      setTimeout(() => poll(card), 5000); // the server may be restarting: try again later
      return;
    }
    delete card.dataset.polling;
  };

  const watch = (card) => {
    if (card.dataset.polling) return;
    card.dataset.polling = "1";
    poll(card);
  };

  document.querySelectorAll("[data-noscript]").forEach((button) => { button.hidden = true; });
  document.querySelectorAll('form[data-action="toggle"] input[type=checkbox]').forEach((box) => {
    box.addEventListener("change", () => box.form.submit());
  });
  document.querySelectorAll('form[data-action="sync"]').forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const card = form.closest("section.connection");
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const response = await fetch(form.dataset.api, {
          method: "POST",
          headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
          credentials: "same-origin",
        });
        const data = await response.json();
        const notice = field(card, "notice");
        if (!response.ok) {
          notice.hidden = false;
          field(card, "notice-message").textContent = data.error.message;
          field(card, "notice-action").textContent = "";
        } else {
          watch(card);
        }
      } finally {
        button.disabled = false;
      }
    });
  });
  document.querySelectorAll("section.connection[data-active]").forEach(watch);
})();
