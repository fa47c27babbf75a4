"""Importers: other tools' files (wg-quick, PiVPN, wg-easy) read into one import plan (`importers.plan`)."""
