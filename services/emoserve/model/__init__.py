"""The model stack: PromptTTS acoustic model, HiFi-GAN vocoder, style encoder, model directories."""
