// "Test connection" on the admin's connection form answers in place: the form's fields are
// sent to the test URL and the result is shown under the button; nothing is saved. Without
// JavaScript the button posts to the same URL and a small page shows the result.
(() => {
  "use strict";
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-connection-test]");
    if (!button) return;
    event.preventDefault();
    const form = button.form;
    const result = document.getElementById("connection-test-result");
    result.hidden = false;
    result.className = "";
    result.textContent = "Testing…";
    button.disabled = true;
    try {
      const answer = await fetch(button.formAction, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      });
      const data = await answer.json();
      result.className = data.ok ? "sync-test-ok" : "sync-test-failed";
      result.textContent = data.message;
    } catch (error) {
      result.className = "sync-test-failed";
      result.textContent = "The test could not be run (the server did not answer). Try again.";
    } finally {
      button.disabled = false;
    }
  });
})();
