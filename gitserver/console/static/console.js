// The console's only script (the CSP allows no other): copy buttons and a pipeline's live log.
// Text from the server is only ever set with textContent, never parsed as HTML.
"use strict";

const POLL_MS = 1000;

function setUpCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent);
        button.textContent = "Copied";
      } catch (err) {
        button.textContent = "Select and copy";
      }
    });
  }
}

async function follow(log) {
  const status = document.getElementById("status");
  let offset = Number(log.dataset.offset || "0");
  let final = log.dataset.final === "yes";
  const endedHere = !final;
  while (true) {
    let response;
    try {
      response = await fetch(`${log.dataset.logUrl}?offset=${offset}`, {credentials: "same-origin"});
    } catch (err) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      continue;
    }
    if (!response.ok) return;
    const text = await response.text();
    offset = Number(response.headers.get("X-Log-Offset") || offset);
    const state = response.headers.get("X-Pipeline-Status") || "";
    if (text) log.append(document.createTextNode(text));
    if (status && state) status.textContent = state;
    if (text) continue;
    // Once final, read once more (the last line follows the final status), then stop.
    if (final) break;
    final = ["succeeded", "failed", "cancelled"].includes(state);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  if (endedHere) {
    // The steps, the error and the cancel button changed too: show the page as it ended.
    location.reload();
    return;
  }
  log.dataset.done = "yes";
}

document.addEventListener("DOMContentLoaded", () => {
  setUpCopyButtons();
  const log = document.getElementById("log");
  if (log) follow(log);
});
