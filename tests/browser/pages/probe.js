// Calls the API the way a web app would and writes every outcome into the table, so
// a screenshot of the page shows what the browser let the page see.
"use strict";

document.getElementById("origin").textContent = location.origin;
const results = document.getElementById("results");

function addRow(label, method, url) {
  const row = results.insertRow();
  for (const text of [String(results.rows.length), `${label}\n${method} ${url}`, "…", "", ""]) {
    row.insertCell().textContent = text;
  }
  row.cells[2].className = "outcome";
  return row;
}

function render(row, result) {
  if (result.error) {
    row.className = "rejected";
    row.cells[2].textContent = `rejected: ${result.error}`;
    return;
  }
  row.className = result.type === "opaque" ? "opaque" : result.status < 400 ? "ok" : "http-error";
  row.cells[2].textContent = `${result.type} ${result.status}`;
  row.cells[3].textContent = Object.entries(result.headers)
    .map(([name, value]) => `${name}: ${value}`)
    .join("\n");
  row.cells[4].textContent = result.text.slice(0, 300);
}

// fetch(url, init) and report what the page can read. `init.blobBody` (a string) is
// sent as a Blob without a type, so the request carries no Content-Type at all.
window.probe = async (label, url, init = {}) => {
  const options = { ...init };
  if (options.blobBody !== undefined) {
    options.body = new Blob([options.blobBody]);
    delete options.blobBody;
  }
  const row = addRow(label, options.method || "GET", url);
  let result;
  try {
    const response = await fetch(url, options);
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    result = {
      error: null,
      type: response.type,
      status: response.status,
      headers: Object.fromEntries(response.headers),
      body,
      text,
    };
  } catch (error) {
    result = { error: `${error.name}: ${error.message}` };
  }
  render(row, result);
  return result;
};

// An HTML form POST into the hidden iframe, as a hostile page would submit it.
window.submitForm = (label, action, enctype, fields) => {
  const row = addRow(label, `POST (form, ${enctype})`, action);
  const form = document.createElement("form");
  form.method = "POST";
  form.action = action;
  form.enctype = enctype;
  form.target = "sink";
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
  row.className = "opaque";
  row.cells[2].textContent = "submitted (the page cannot read the answer)";
  row.cells[4].textContent = JSON.stringify(fields);
};
