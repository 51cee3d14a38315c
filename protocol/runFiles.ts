/**
 * Names of the files the runner keeps in an output_dir besides the Hugging Face layout, shared with the
 * extension (which lists run folders without loading runner code).
 */

/** Present while saveModel replaces a final model in a folder with other content; left behind by a crash mid-save. */
export const SAVE_MARKER_FILE = '.sft-model-save.json';

/** The lock a running trainer holds on its output_dir (native-runner/train/lock.ts). */
export const LOCK_FILE = '.sft-lock';
