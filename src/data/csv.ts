// RFC 4180 CSV: comma separated, fields optionally quoted with ", a doubled "" inside quotes
// is a literal quote, and quoted fields may span lines. Each record remembers the line it
// started on so errors can point at it.

export interface CsvRecord { fields: string[]; line: number }

export function parseCsv(text: string, file = '<csv>', delimiter = ','): CsvRecord[] {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // BOM
  const out: CsvRecord[] = [];
  let fields: string[] = [];
  let field = '';
  let line = 1, startLine = 1;
  let i = 0;
  let inQuotes = false, quoted = false, atFieldStart = true;
  const endField = () => { fields.push(field); field = ''; quoted = false; atFieldStart = true; };
  const endRecord = () => {
    endField();
    // A blank line is no record.
    if (!(fields.length === 1 && fields[0] === '' )) out.push({ fields, line: startLine });
    fields = [];
  };
  while (i < text.length) {
    const c = text[i];
    if (inQuotes) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i += 2; continue; }
        inQuotes = false; i++; continue;
      }
      if (c === '\n') line++;
      field += c; i++; continue;
    }
    if (c === '"') {
      if (!atFieldStart) throw new Error(`${file}:${line}: stray quote inside an unquoted field (quote the whole field and double inner quotes)`);
      inQuotes = true; quoted = true; atFieldStart = false; i++; continue;
    }
    if (c === delimiter) { endField(); i++; continue; }
    if (c === '\r' || c === '\n') {
      endRecord();
      if (c === '\r' && text[i + 1] === '\n') i++;
      i++; line++; startLine = line; continue;
    }
    if (quoted) throw new Error(`${file}:${line}: characters after a closing quote (found '${c}')`);
    field += c; atFieldStart = false; i++;
  }
  if (inQuotes) throw new Error(`${file}:${startLine}: unterminated quoted field (opened in the record starting on this line)`);
  if (field !== '' || fields.length || quoted) endRecord();
  return out;
}
