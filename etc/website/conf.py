"""Sphinx configuration of the course website (etc/website/build.py writes the source tree)."""

project = "thplab"
author = "the thplab authors"
copyright = "the thplab authors"
html_title = "thplab: the THP refcounting redesign, lesson by lesson"

extensions = ["myst_nb"]
# The lessons arrive executed (build.py); the site never runs them.
nb_execution_mode = "off"
# Widgets are not live on the site: no ipywidgets loader, no require.js from a CDN.
nb_ipywidgets_js = {}
# Stderr shown as such (MyST-NB's default, relied on: the site test fails on a stderr cell).
nb_output_stderr = "show"
# How the kernel chunked a stream varies by run: one block per stream, as JupyterLab shows it.
nb_merge_streams = True
# The glossary goes from its title straight to one "###" heading per term.
suppress_warnings = ["myst.header"]

exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

html_theme = "sphinx_book_theme"
html_static_path = ["static"]
html_css_files = ["thplab.css"]
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    "use_download_button": False,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
}
# One search box, the theme's field at the top of the page: not a second one in the sidebar
# (and the article header's search button is hidden in thplab.css).
html_sidebars = {"**": ["navbar-logo.html", "sbt-sidebar-nav.html"]}
