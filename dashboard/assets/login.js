"use strict";
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.hidden = true;
  const token = document.getElementById("token").value;
  try {
    const response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ token }),
    });
    if (response.ok) {
      window.location.href = "/#/queues";
      return;
    }
    const body = await response.json().catch(() => ({}));
    error.textContent = body.error || ("login failed: " + response.status);
  } catch (e) {
    error.textContent = "cannot reach the dashboard: " + e.message;
  }
  error.hidden = false;
});
