export const answer = 42;
export const metaUrl = import.meta.url;
