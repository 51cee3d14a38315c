/** Shapes of the data layer: records → conversations → tokenised examples → MicroBatch (engine/types). */

export type Role = 'system' | 'user' | 'assistant';

export interface Turn {
  role: Role;
  content: string;
}

/** Where a record came from, for error messages and the preview's links. Lines are 1-based. */
export interface SourceRef {
  file: string;
  line: number;
}

export interface Conversation {
  turns: Turn[];
  source: SourceRef;
  /** Set for the `text` format: the example is this text as is (no template, every token trained); turns is empty. */
  rawText?: string;
}

/** One example after rendering, piece-by-piece tokenisation and truncation. */
export interface TokenizedExample {
  /** Rendered text of the whole conversation (before truncation). */
  text: string;
  /** Ids after truncation to max_length. */
  inputIds: number[];
  /** 1 where the token is a label that the loss sees (before the engine's shift), per id in inputIds. */
  trained: Uint8Array;
  /** Token count before truncation. */
  fullLength: number;
  source: SourceRef;
}

export interface BadLine {
  file: string;
  line: number;
  reason: string;
}
