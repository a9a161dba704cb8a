# uffd: targets of this part (see Makefile.am)
