/**
 * Every failure a user can cause (bad file, bad plan, bad flag) is one of these, so the CLI can
 * print it without a stack trace and exit non-zero. `code` is stable and machine-readable.
 */
export class FlmGrowError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A malformed safetensors file. Codes follow the reference implementation's error names. */
export type SafetensorsErrorCode =
  | 'HeaderTooSmall'
  | 'HeaderTooLarge'
  | 'InvalidHeaderLength'
  | 'InvalidHeader'
  | 'InvalidHeaderDeserialization'
  | 'InvalidOffset'
  | 'ValidationOverflow'
  | 'TensorInvalidInfo'
  | 'MetadataIncompleteBuffer'
  | 'UnsupportedDtype'
  | 'DuplicateTensor'
  | 'TensorNotFound'
  | 'WriteMismatch';

export class SafetensorsError extends FlmGrowError {
  readonly file: string;
  readonly tensor: string | undefined;
  constructor(code: SafetensorsErrorCode, file: string, message: string, tensor?: string) {
    super(code, `${file}${tensor !== undefined ? ` [${tensor}]` : ''}: ${code}: ${message}`);
    this.file = file;
    this.tensor = tensor;
  }
}

/** An inconsistent checkpoint folder: index, shards, config vs tensors. */
export class CheckpointError extends FlmGrowError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/** config.json that we cannot interpret. */
export class ConfigError extends FlmGrowError {
  readonly field: string | undefined;
  /** Every field named, when one error reports several problems of the file at once. */
  readonly fields: readonly string[];
  constructor(file: string, field: string | undefined, message: string, fields?: readonly string[]) {
    super('ConfigError', `${file}${field !== undefined ? `: field "${field}"` : ''}: ${message}`);
    this.field = field;
    this.fields = fields ?? (field !== undefined ? [field] : []);
  }
}

/** An invalid or impossible growth plan. */
export class PlanError extends FlmGrowError {
  readonly field: string | undefined;
  constructor(field: string | undefined, message: string, source = 'plan') {
    super('PlanError', `${source}${field !== undefined ? `: field "${field}"` : ''}: ${message}`);
    this.field = field;
  }
}

/** Bad model input (ids out of range, wrong rank) or a failed numerical check. */
export class ModelInputError extends FlmGrowError {
  constructor(message: string) {
    super('ModelInputError', message);
  }
}

export class TrainError extends FlmGrowError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}
