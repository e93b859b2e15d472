// The studio page: built in src/fluxserve/web/static/studio.js.
document.getElementById("loading")?.remove();
