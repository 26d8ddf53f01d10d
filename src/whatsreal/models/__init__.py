"""Models: plain torch modules built from named presets, loadable without training code."""
