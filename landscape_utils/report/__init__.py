"""The report layer: figures (:mod:`.plots`), tables (:mod:`.tables`), the comparison's
analysis text (:mod:`.comparison`) and the single-file HTML report (:mod:`.html`)."""
